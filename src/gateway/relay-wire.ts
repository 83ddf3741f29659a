/** The control records between the daemon and appswitch-relay (native/relay_proto.h): fixed 64-byte little-endian
 * records, one or more per SOCK_SEQPACKET message. Encoded and decoded here only; everything past this file sees
 * typed values. */
import os from 'node:os';
import ipaddr from 'ipaddr.js';
import { canonicalIp, type Endpoint } from '../table/endpoint.js';
import { ip16 } from '../trap/decision-table.js';
import type { ForwarderStats, IngressRefusal, IngressRoute } from './forwarder.js';

export const RELAY_REC = 64;

/* 16 was CONN, a record per relayed connection: no longer sent (the instance's generator reads the client from the
 * connection's preamble), and counted as bad if it ever comes. */
const T = { listen: 1, unlisten: 2, key: 3, refused: 17, listenErr: 18, stats: 19, listening: 20 } as const;
const REASONS: Record<number, IngressRefusal['reason']> = { 1: 'no-instance', 2: 'all-refused', 3: 'limit' };

export interface RelayStats extends ForwarderStats {
  /** The relay's connection cap; how many of its workers are not accepting now (EMFILE, a full control socket);
   * records it dropped because the daemon did not read them. */
  maxConns: number;
  paused: number;
  dropped: number;
}

export type RelayEvent =
  | ({ type: 'refused' } & IngressRefusal)
  | { type: 'listen-error'; id: number; errno: number; code: string }
  | { type: 'listening'; id: number }
  | { type: 'stats'; stats: RelayStats };

export function encodeListen(r: IngressRoute): Buffer {
  const b = Buffer.alloc(RELAY_REC);
  b.writeUInt32LE(T.listen, 0);
  b.writeUInt32LE(r.id, 4);
  ip16(r.address).copy(b, 8);
  ip16(r.vip).copy(b, 24);
  b.writeUInt16LE(r.hostPort, 40);
  b.writeUInt16LE(r.port, 42);
  return b;
}

/** The preamble key (native/preamble.h): every connection the relay opens to an instance starts with a preamble MACed
 * with it. */
export function encodeKey(key: Buffer): Buffer {
  if (key.length !== 16) throw new RangeError('a preamble key is 16 bytes');
  const b = Buffer.alloc(RELAY_REC);
  b.writeUInt32LE(T.key, 0);
  key.copy(b, 8);
  return b;
}

export function encodeUnlisten(id: number): Buffer {
  const b = Buffer.alloc(RELAY_REC);
  b.writeUInt32LE(T.unlisten, 0);
  b.writeUInt32LE(id, 4);
  return b;
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

/** An address's canonical text; IPv4 (::ffff:a.b.c.d) without a parser. */
function ipText(b: Buffer, o: number): string {
  if (b.readUInt32LE(o) === 0 && b.readUInt32LE(o + 4) === 0 && b.readUInt32LE(o + 8) === 0xffff0000) {
    return `${b[o + 12] as number}.${b[o + 13] as number}.${b[o + 14] as number}.${b[o + 15] as number}`;
  }
  return canonicalIp(ipaddr.fromByteArray([...b.subarray(o, o + 16)]).toString());
}

function ep(b: Buffer, ipOff: number, portOff: number): Endpoint {
  return { ip: ipText(b, ipOff), port: b.readUInt16LE(portOff) };
}

/** Decodes one message from the relay. `bad`: records of an unknown type or reason, or a torn tail (counted, not
 * trusted). */
export function decodeRelay(msg: Buffer): { events: RelayEvent[]; bad: number } {
  const events: RelayEvent[] = [];
  let bad = msg.length % RELAY_REC ? 1 : 0;
  for (let o = 0; o + RELAY_REC <= msg.length; o += RELAY_REC) {
    const b = msg.subarray(o, o + RELAY_REC);
    const type = b.readUInt32LE(0);
    switch (type) {
      case T.refused: {
        const reason = REASONS[b.readUInt8(26)];
        if (!reason) bad++;
        else events.push({ type: 'refused', route: b.readUInt32LE(4), client: ep(b, 8, 24), reason });
        break;
      }
      case T.listenErr: {
        const errno = b.readInt32LE(8);
        events.push({ type: 'listen-error', id: b.readUInt32LE(4), errno, code: errnoNames.get(errno) ?? `E${errno}` });
        break;
      }
      case T.listening:
        events.push({ type: 'listening', id: b.readUInt32LE(4) });
        break;
      case T.stats:
        events.push({
          type: 'stats',
          stats: {
            accepted: Number(b.readBigUInt64LE(8)),
            forwarded: Number(b.readBigUInt64LE(16)),
            refused: Number(b.readBigUInt64LE(24)),
            active: Number(b.readBigUInt64LE(32)),
            bytes: Number(b.readBigUInt64LE(40)),
            maxConns: b.readUInt32LE(48),
            paused: b.readUInt32LE(52),
            dropped: Number(b.readBigUInt64LE(56)),
          },
        });
        break;
      default:
        bad++;
    }
  }
  return { events, bad };
}
