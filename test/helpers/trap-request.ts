/** A trap message as the trap server hands it to the handler: encoded, decoded (decodeMsg), then decoded into its
 * typed request (decodeRequest), which must be of the kind the test expects. */
import { decodeMsg, decodeRequest, encodeMsg, type RequestOf, type TrapMsg, type TrapRequest } from '../../src/trap/protocol.js';

export function request<K extends TrapRequest['kind']>(kind: K, m: Partial<TrapMsg> & { type: number }): RequestOf<K> {
  const msg = decodeMsg(encodeMsg(m));
  if (!msg) throw new Error('message does not decode');
  const r = decodeRequest(msg);
  if (r.kind !== kind) throw new Error(`expected a ${kind} request, got ${r.kind}`);
  return r as RequestOf<K>;
}
