// Keyring and AES-256-GCM sealing of gossip packets (node:crypto). The first key encrypts, every key decrypts,
// which is what key rotation needs.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { GossipError } from './errors.js';

/** AES-256 key length in bytes. */
export const KEY_BYTES = 32;
/** GCM nonce length (random per packet). */
export const NONCE_BYTES = 12;
/** GCM authentication tag length. */
export const TAG_BYTES = 16;
/** Bytes added by sealing: nonce + tag. */
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;

/** Cap on keyring size: decryption tries keys in order, so the ring must stay small. */
export const MAX_KEYS = 8;

/**
 * An ordered set of AES-256 keys. Key 0 is the primary: {@link seal} uses it unless told otherwise. {@link open}
 * tries every key, so a cluster can rotate by (1) adding the new key everywhere, (2) making it primary,
 * (3) removing the old one. Keys are copied on construction.
 */
export class Keyring {
  private readonly keys: Buffer[];

  /** @throws GossipError ERR_GOSSIP_BAD_KEY when empty, larger than {@link MAX_KEYS}, or a key is not 32 bytes. */
  constructor(keys: readonly Uint8Array[]) {
    if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_KEYS) {
      throw new GossipError('ERR_GOSSIP_BAD_KEY', `keyring needs 1..${MAX_KEYS} keys`);
    }
    this.keys = keys.map((k, i) => {
      if (!(k instanceof Uint8Array) || k.length !== KEY_BYTES) {
        throw new GossipError('ERR_GOSSIP_BAD_KEY', `key ${i} must be ${KEY_BYTES} bytes`);
      }
      return Buffer.from(k);
    });
  }

  /** Number of keys. */
  get size(): number {
    return this.keys.length;
  }

  /** Encrypts `plain` with key `keyIndex` (default primary). Output: nonce ‖ ciphertext ‖ tag. */
  seal(plain: Uint8Array, aad: Uint8Array, keyIndex = 0): Uint8Array {
    const key = this.keys[keyIndex] ?? this.keys[0]!;
    const nonce = randomBytes(NONCE_BYTES);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(aad);
    const body = c.update(plain);
    const fin = c.final();
    const tag = c.getAuthTag();
    const out = new Uint8Array(NONCE_BYTES + body.length + fin.length + TAG_BYTES);
    out.set(nonce, 0);
    out.set(body, NONCE_BYTES);
    out.set(fin, NONCE_BYTES + body.length);
    out.set(tag, NONCE_BYTES + body.length + fin.length);
    return out;
  }

  /** Decrypts `sealed` (nonce ‖ ciphertext ‖ tag) with the first key that authenticates it, or undefined. */
  open(sealed: Uint8Array, aad: Uint8Array): { plain: Uint8Array; keyIndex: number } | undefined {
    if (sealed.length < SEAL_OVERHEAD) return undefined;
    const nonce = sealed.subarray(0, NONCE_BYTES);
    const ct = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
    const tag = sealed.subarray(sealed.length - TAG_BYTES);
    for (let i = 0; i < this.keys.length; i++) {
      try {
        const d = createDecipheriv('aes-256-gcm', this.keys[i]!, nonce);
        d.setAAD(aad);
        d.setAuthTag(tag);
        const a = d.update(ct);
        const b = d.final();
        const plain = b.length === 0 ? new Uint8Array(a.buffer, a.byteOffset, a.length) : Buffer.concat([a, b]);
        return { plain, keyIndex: i };
      } catch {
        // wrong key or forged: try the next one
      }
    }
    return undefined;
  }
}
