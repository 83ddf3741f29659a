/** The cluster key: reading a keyring file, creating a new one atomically (first start, `appswitch keygen`), and
 * deciding which key a daemon uses. Gossip (AES-256-GCM) and the peer API (HMAC-SHA256) share it. The key's bytes
 * never reach a log line or an error message. Follows open(2) (O_EXCL), link(2) (atomic, never replaces a file). */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { AppswitchError } from '../errors.js';
import { createFileExclusive } from '../exclusive-file.js';

/** The key file a daemon creates (and then uses) in its state directory when no --gossip-key is given. */
export const KEY_FILE_NAME = 'gossip.key';
/** Bytes of one key (AES-256 and the HMAC key). */
export const CLUSTER_KEY_BYTES = 32;

/** Reads a keyring file: one base64 (or 64-hex-digit) 32-byte key per line; '#' starts a comment. The first key
 * encrypts and signs, every key decrypts and verifies (rotation). Throws ERR_CONFIG naming the file and line. */
export function readKeyring(file: string): Uint8Array[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const keys: Uint8Array[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const key = /^[0-9a-f]{64}$/i.test(line) ? Buffer.from(line, 'hex') : Buffer.from(line, 'base64');
    if (key.length !== CLUSTER_KEY_BYTES) throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}:${i + 1}: a key must be 32 bytes (base64 or hex)`);
    keys.push(new Uint8Array(key));
  });
  if (keys.length === 0) throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}: no key in the file`);
  return keys;
}

/** A new key file's text: a comment line and one fresh random key in base64. */
export function newKeyText(): string {
  return `# appswitch cluster key (gossip and peer API): give this file to every node of the cluster, keep it secret\n${randomBytes(CLUSTER_KEY_BYTES).toString('base64')}\n`;
}

/** Creates `file` holding a new key, mode 0600, atomically: the key is written and synced to a temporary file in the
 * same directory, which is then hard-linked to `file` (link(2) fails with EEXIST rather than replace a file, so an
 * existing key is never overwritten and no reader ever sees a half-written one). Returns false when `file` exists. */
export function createKeyFile(file: string): boolean {
  return createFileExclusive(file, newKeyText());
}

/** Which key a daemon uses, and where it came from. */
export type GossipKey =
  | { mode: 'key'; keys: Uint8Array[]; file: string; source: 'flag' | 'state-dir' | 'generated'; looseMode?: string }
  | { mode: 'plaintext' };

/** What decides the key: the daemon's flags. */
export interface GossipKeyConfig {
  gossipKeyFile?: string;
  gossipPlaintext: boolean;
  stateDir: string;
  joins: string[];
}

/**
 * The key a daemon uses: `--gossip-key FILE`, else STATE-DIR/gossip.key, else (a node that joins nobody: the first
 * of a new cluster) a key generated there. A node started with --join and no key refuses to start (ERR_CONFIG with
 * what to do): a key of its own could never decrypt the cluster's packets, and an isolated node that looks healthy
 * is worse than one that does not start. Plaintext only with --gossip-plaintext.
 */
export function resolveGossipKey(cfg: GossipKeyConfig): GossipKey {
  if (cfg.gossipPlaintext) return { mode: 'plaintext' };
  const own = path.join(cfg.stateDir, KEY_FILE_NAME);
  let file = cfg.gossipKeyFile;
  let source: 'flag' | 'state-dir' | 'generated' = 'flag';
  if (file === undefined) {
    file = own;
    source = 'state-dir';
    if (!exists(own)) {
      if (cfg.joins.length > 0) {
        throw new AppswitchError(
          'ERR_CONFIG',
          `--join ${cfg.joins.join(' ')} without a cluster key: a key of this node's own could never talk to the cluster. ` +
            `Copy the key file of a member (its STATE-DIR/${KEY_FILE_NAME}, or the file its --gossip-key names) to ${own} (mode 0600), ` +
            `or pass --gossip-key FILE (config key gossip-key); for a new cluster, run "appswitch keygen FILE" once and give FILE to every node`,
        );
      }
      createKeyFile(own);
      source = 'generated';
    }
  }
  const keys = readKeyring(file);
  const mode = statSync(file).mode & 0o777;
  const out: GossipKey = { mode: 'key', keys, file, source };
  if ((mode & 0o077) !== 0) out.looseMode = mode.toString(8).padStart(4, '0');
  return out;
}

function exists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}
