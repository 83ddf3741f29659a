// Packet envelope: protocol version byte, flags, optional AES-GCM sealing, optional raw-deflate compression, and
// the replay header (sender session, timestamp, sequence) that starts every body.

import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Keyring, SEAL_OVERHEAD } from './crypto.js';

/** Protocol version spoken and accepted (first byte of every packet and stream frame). */
export const PROTOCOL_VERSION = 1;

const FLAG_ENCRYPTED = 0x01;
const FLAG_COMPRESSED = 0x02;
const KNOWN_FLAGS = FLAG_ENCRYPTED | FLAG_COMPRESSED;

/** Bytes of the outer header: version + flags. */
export const OUTER_HEADER_BYTES = 2;
/** Bytes of the replay header inside the body: session (u48) + timestamp ms (u48) + sequence (u32). */
export const REPLAY_HEADER_BYTES = 16;

/** Reasons a packet or frame is dropped. Stable strings: they key the `dropped` counters. */
export type DropReason =
  | 'oversized'
  | 'truncated'
  | 'malformed'
  | 'unknown-version'
  | 'unencrypted'
  | 'encrypted-no-keyring'
  | 'decrypt-failed'
  | 'decompress-failed'
  | 'replayed'
  | 'stale'
  | 'wrong-target'
  | 'unexpected-message'
  | 'handler-error';

/** All drop reasons (to pre-fill counters). */
export const DROP_REASONS: readonly DropReason[] = [
  'oversized',
  'truncated',
  'malformed',
  'unknown-version',
  'unencrypted',
  'encrypted-no-keyring',
  'decrypt-failed',
  'decompress-failed',
  'replayed',
  'stale',
  'wrong-target',
  'unexpected-message',
  'handler-error',
];

/** The replay header of a body. */
export interface ReplayHeader {
  session: number;
  timestamp: number;
  seq: number;
}

/** Options to seal a body. */
export interface SealOptions {
  keyring: Keyring | undefined;
  /** Which key of the ring to encrypt with (default 0, the primary). */
  keyIndex?: number;
  /** Compress when the body is at least this many bytes (0 disables compression). */
  compressThreshold: number;
}

/** Writes a replay header into the first 16 bytes of `dst`. */
export function writeReplayHeader(dst: Uint8Array, h: ReplayHeader): void {
  const v = new DataView(dst.buffer, dst.byteOffset, REPLAY_HEADER_BYTES);
  v.setUint16(0, Math.floor(h.session / 0x100000000) & 0xffff);
  v.setUint32(2, h.session >>> 0);
  v.setUint16(6, Math.floor(h.timestamp / 0x100000000) & 0xffff);
  v.setUint32(8, h.timestamp >>> 0);
  v.setUint32(12, h.seq >>> 0);
}

/** Reads the replay header at the start of a body (caller checked the length). */
export function readReplayHeader(body: Uint8Array): ReplayHeader {
  const v = new DataView(body.buffer, body.byteOffset, REPLAY_HEADER_BYTES);
  return {
    session: v.getUint16(0) * 0x100000000 + v.getUint32(2),
    timestamp: v.getUint16(6) * 0x100000000 + v.getUint32(8),
    seq: v.getUint32(12),
  };
}

/** Upper bound of envelope bytes around a body of the given options (compression can only shrink the body). */
export function envelopeOverhead(encrypted: boolean): number {
  return OUTER_HEADER_BYTES + (encrypted ? SEAL_OVERHEAD : 0);
}

/** A body after the compression decision, before sealing. */
export interface PreparedBody {
  payload: Uint8Array;
  compressed: boolean;
}

/** Compresses `body` when it is at least `threshold` bytes and compression helps. */
export function prepareBody(body: Uint8Array, threshold: number): PreparedBody {
  if (threshold > 0 && body.length >= threshold) {
    // Small bodies (datagrams) need no 32 KiB window; a 2 KiB window and small state deflate ~2.5× faster with the
    // same ratio. Inflate with the default window accepts either.
    const z = body.length <= 2048 ? deflateRawSync(body, { windowBits: 11, memLevel: 4 }) : deflateRawSync(body);
    if (z.length < body.length) return { payload: z, compressed: true };
  }
  return { payload: body, compressed: false };
}

/** Size of the packet {@link finishEnvelope} will produce. */
export function sealedSize(p: PreparedBody, encrypted: boolean): number {
  return envelopeOverhead(encrypted) + p.payload.length;
}

/** Wraps a body (replay header + messages) into a packet / stream frame. */
export function sealEnvelope(body: Uint8Array, opts: SealOptions): Uint8Array {
  return finishEnvelope(prepareBody(body, opts.compressThreshold), opts.keyring, opts.keyIndex ?? 0);
}

/** Adds the outer header and, with a keyring, encrypts. */
export function finishEnvelope(p: PreparedBody, keyring: Keyring | undefined, keyIndex: number): Uint8Array {
  const payload = p.payload;
  const flags = p.compressed ? FLAG_COMPRESSED : 0;
  const header = new Uint8Array(OUTER_HEADER_BYTES);
  header[0] = PROTOCOL_VERSION;
  if (keyring !== undefined) {
    header[1] = flags | FLAG_ENCRYPTED;
    const sealed = keyring.seal(payload, header, keyIndex);
    const out = new Uint8Array(OUTER_HEADER_BYTES + sealed.length);
    out.set(header, 0);
    out.set(sealed, OUTER_HEADER_BYTES);
    return out;
  }
  header[1] = flags;
  const out = new Uint8Array(OUTER_HEADER_BYTES + payload.length);
  out.set(header, 0);
  out.set(payload, OUTER_HEADER_BYTES);
  return out;
}

/** Result of {@link openEnvelope}. */
export type OpenResult =
  | { ok: true; body: Uint8Array; header: ReplayHeader; keyIndex: number; encrypted: boolean }
  | { ok: false; reason: DropReason };

/**
 * Validates and unwraps a packet or frame. Never throws. `maxBody` caps the (decompressed) body size.
 * With a keyring, unencrypted input is refused; without one, encrypted input is refused.
 */
export function openEnvelope(buf: Uint8Array, keyring: Keyring | undefined, maxBody: number): OpenResult {
  if (buf.length < OUTER_HEADER_BYTES) return { ok: false, reason: 'truncated' };
  if (buf[0] !== PROTOCOL_VERSION) return { ok: false, reason: 'unknown-version' };
  const flags = buf[1]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) return { ok: false, reason: 'malformed' };
  let payload = buf.subarray(OUTER_HEADER_BYTES);
  let keyIndex = -1;
  const encrypted = (flags & FLAG_ENCRYPTED) !== 0;
  if (encrypted) {
    if (keyring === undefined) return { ok: false, reason: 'encrypted-no-keyring' };
    if (payload.length < SEAL_OVERHEAD) return { ok: false, reason: 'truncated' };
    const opened = keyring.open(payload, buf.subarray(0, OUTER_HEADER_BYTES));
    if (opened === undefined) return { ok: false, reason: 'decrypt-failed' };
    payload = opened.plain;
    keyIndex = opened.keyIndex;
  } else if (keyring !== undefined) {
    return { ok: false, reason: 'unencrypted' };
  }
  if ((flags & FLAG_COMPRESSED) !== 0) {
    try {
      payload = inflateRawSync(payload, { maxOutputLength: maxBody });
    } catch (e) {
      const code = (e as { code?: string }).code;
      return { ok: false, reason: code === 'ERR_BUFFER_TOO_LARGE' ? 'oversized' : 'decompress-failed' };
    }
  }
  if (payload.length > maxBody) return { ok: false, reason: 'oversized' };
  if (payload.length < REPLAY_HEADER_BYTES) return { ok: false, reason: 'truncated' };
  return {
    ok: true,
    body: payload.subarray(REPLAY_HEADER_BYTES),
    header: readReplayHeader(payload),
    keyIndex,
    encrypted,
  };
}
