/** The keys of the ingress preamble (native/preamble.h): a gateway's relay MACs each relayed connection's preamble
 * with the first, an instance's generator accepts any of them. Derived from the cluster keys (the gossip keyring, see
 * daemon/gossip-key.ts) so that every member has them and nobody without the cluster key can make a preamble; a
 * cluster run with --gossip-plaintext has no secret, and its fixed key authenticates nothing (as gossip itself). */
import { createHash, createHmac } from 'node:crypto';

/** As many as a generator reads (native/dtab.h AS_DT_INGRESS_KEYS). */
export const MAX_PREAMBLE_KEYS = 4;
const LABEL = 'appswitch ingress preamble v1';

export function preambleKeys(clusterKeys: readonly Uint8Array[] | undefined): Buffer[] {
  if (!clusterKeys?.length) return [createHash('sha256').update(`${LABEL} (plaintext cluster)`).digest().subarray(0, 16)];
  return clusterKeys.slice(0, MAX_PREAMBLE_KEYS).map((k) => createHmac('sha256', k).update(LABEL).digest().subarray(0, 16));
}
