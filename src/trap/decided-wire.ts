/** AS_DECIDED's payload (native/proto.h struct as_decided): the connects a generator decided by itself from the
 * decision table, in a batch. Decoded once, at the trap server (protocol.ts decodeRequest), into typed records. */
import ipaddr from 'ipaddr.js';
import type { Endpoint } from '../table/endpoint.js';

export const DECIDED_RECORD = 104;

export type DecidedKind = 'tcp' | 'fastpath' | 'no-service' | 'denied' | 'all-refused';
const KINDS: Record<number, DecidedKind> = { 1: 'tcp', 2: 'fastpath', 3: 'no-service', 4: 'denied', 5: 'all-refused' };

export interface DecidedRecord {
  kind: DecidedKind;
  /** Instances that refused before this one. */
  retried: number;
  local: Endpoint;
  real: Endpoint;
  virt: Endpoint;
  pid: number;
  /** Fast path: inode of the server's end of the socket pair. */
  inode: string | undefined;
  serverApp: string | undefined;
}

/** The 16-byte address at off as text (IPv4 for ::ffff:a.b.c.d): the common case written out, it runs three times per
 * record and was the daemon's largest cost per decided connection through ipaddr.js. */
function ip(b: Buffer, off: number): string {
  let mapped = b[off + 10] === 0xff && b[off + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) mapped = b[off + i] === 0;
  if (mapped) return `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
  return (ipaddr.fromByteArray([...b.subarray(off, off + 16)]) as ipaddr.IPv6).toString();
}

/** Decodes a batch; records of an unknown kind are skipped (counted in `bad`). */
export function decodeDecided(payload: Buffer): { records: DecidedRecord[]; bad: number } {
  const records: DecidedRecord[] = [];
  let bad = 0;
  for (let o = 0; o + DECIDED_RECORD <= payload.length; o += DECIDED_RECORD) {
    const kind = KINDS[payload.readUInt8(o)];
    if (!kind) {
      bad++;
      continue;
    }
    const inode = payload.readBigUInt64LE(o + 64);
    const app = payload.subarray(o + 72, o + 104);
    const end = app.indexOf(0);
    const serverApp = app.subarray(0, end < 0 ? app.length : end).toString('latin1');
    records.push({
      kind,
      retried: payload.readUInt8(o + 1),
      local: { ip: ip(payload, o + 8), port: payload.readUInt16LE(o + 2) },
      real: { ip: ip(payload, o + 24), port: payload.readUInt16LE(o + 4) },
      virt: { ip: ip(payload, o + 40), port: payload.readUInt16LE(o + 6) },
      pid: payload.readUInt32LE(o + 56),
      inode: inode ? inode.toString() : undefined,
      serverApp: serverApp || undefined,
    });
  }
  if (payload.length % DECIDED_RECORD) bad++;
  return { records, bad };
}
