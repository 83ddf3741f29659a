// DNS message helpers on top of dns-packet (RFC 1035 §4.1, RFC 6891 EDNS0): header bits, response building,
// UDP size limits and truncation, TCP length framing (RFC 1035 §4.2.2, RFC 7766). All parsing goes through
// dns-packet; the only raw byte access is the 2-byte TCP length prefix and the 16-bit message ID (see withId).

import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Packet } from 'dns-packet';

/** RCODE values (RFC 1035 §4.1.1, RFC 6895). */
export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

/** OPCODE QUERY (RFC 1035 §4.1.1). */
export const OPCODE_QUERY = 0;

/** Classic DNS-over-UDP message limit without EDNS0 (RFC 1035 §2.3.4). */
export const CLASSIC_UDP_LIMIT = 512;

/** UDP payload size this server advertises in its own OPT records (DNS flag day 2020 value). */
export const ADVERTISED_UDP_PAYLOAD = 1232;

/** Largest DNS message a TCP frame can carry. */
export const MAX_MESSAGE = 65535;

const OPCODE_MASK = 0x7800;
const RCODE_MASK = 0x000f;
const DO_BIT = 0x8000;

/** RCODE of a decoded message (dns-packet keeps it in the low bits of `flags`). */
export function rcodeOf(p: Packet): number {
  return (p.flags ?? 0) & RCODE_MASK;
}

/** OPCODE of a decoded message. */
export function opcodeOf(p: Packet): number {
  return ((p.flags ?? 0) & OPCODE_MASK) >> 11;
}

/** The EDNS0 OPT pseudo-record of a message, if any. */
export function optOf(p: Packet): OptAnswer | undefined {
  return p.additionals?.find((a): a is OptAnswer => a.type === 'OPT');
}

/** Largest UDP response the client accepts: its EDNS0 payload size, never below 512 (RFC 6891 §6.2.5). */
export function udpLimitOf(query: Packet): number {
  const opt = optOf(query);
  if (opt === undefined) return CLASSIC_UDP_LIMIT;
  return Math.min(MAX_MESSAGE, Math.max(CLASSIC_UDP_LIMIT, opt.udpPayloadSize));
}

/** What a locally built response says besides the echoed question. */
export interface ResponseParts {
  rcode: number;
  /** Sets AA: this server is the authority for the name (appswitch names, localhost). */
  authoritative: boolean;
  answers?: Answer[];
  authorities?: Answer[];
}

/**
 * A response to `query`: same ID, opcode, RD and CD bits, RA set (this server recurses through its forwarders),
 * the question section echoed, and an OPT record when the query carried one (its DO bit copied, RFC 3225 §3).
 */
export function buildResponse(query: DecodedPacket, parts: ResponseParts): Packet {
  const qflags = query.flags ?? 0;
  let flags = (qflags & OPCODE_MASK) | (parts.rcode & RCODE_MASK) | dnsPacket.RECURSION_AVAILABLE;
  flags |= qflags & (dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED);
  if (parts.authoritative) flags |= dnsPacket.AUTHORITATIVE_ANSWER;
  const additionals: Answer[] = [];
  const qopt = optOf(query);
  if (qopt !== undefined) {
    const doBit = (qopt.flags ?? 0) & DO_BIT;
    additionals.push({
      type: 'OPT',
      name: '.',
      udpPayloadSize: ADVERTISED_UDP_PAYLOAD,
      extendedRcode: 0,
      ednsVersion: 0,
      flags: doBit,
      flag_do: doBit !== 0,
      options: [],
    });
  }
  return {
    type: 'response',
    id: query.id ?? 0,
    flags,
    questions: query.questions ?? [],
    answers: parts.answers ?? [],
    authorities: parts.authorities ?? [],
    additionals,
  };
}

/** An encoded message and whether it had to be truncated to fit. */
export interface Encoded {
  buf: Buffer;
  truncated: boolean;
}

/**
 * Encodes `p`; when it exceeds `limit` bytes, encodes instead a copy with TC set that keeps only the question and
 * the OPT record (RFC 2181 §9: the client retries over TCP).
 */
export function encodeWithin(p: Packet, limit: number): Encoded {
  const full = dnsPacket.encode(p);
  if (full.length <= limit) return { buf: full, truncated: false };
  return { buf: encodeTruncated(p), truncated: true };
}

/** `p` reduced to header, question and OPT, with TC set. */
export function encodeTruncated(p: Packet): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id: p.id ?? 0,
    flags: (p.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
    questions: p.questions ?? [],
    answers: [],
    authorities: [],
    additionals: (p.additionals ?? []).filter((a) => a.type === 'OPT'),
  });
}

/**
 * A copy of an encoded message with its 16-bit ID (bytes 0-1, RFC 1035 §4.1.1) replaced. This is deliberately
 * not a decode/encode round trip through dns-packet: dns-packet does not compress names, so re-encoding an
 * upstream answer could grow it past the client's UDP limit, and records it decodes lossily (non-UTF-8 labels)
 * would be altered. The message has already been validated by dns-packet.decode before this is called.
 */
export function withId(msg: Buffer, id: number): Buffer {
  const out = Buffer.from(msg);
  out.writeUInt16BE(id & 0xffff, 0);
  return out;
}

/** A DNS message with the 2-byte length prefix of DNS over TCP. */
export function frame(msg: Buffer): Buffer {
  if (msg.length > MAX_MESSAGE) throw new RangeError(`DNS message of ${msg.length} bytes cannot be framed`);
  const out = Buffer.allocUnsafe(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

/** Splits a DNS-over-TCP byte stream into messages. At most one partial message (< 64 KiB) is buffered. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the messages completed by them, or 'empty-frame' for a zero length prefix. */
  push(chunk: Buffer): Buffer[] | 'empty-frame' {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    while (this.pending.length >= 2) {
      const len = this.pending.readUInt16BE(0);
      if (len === 0) return 'empty-frame';
      if (this.pending.length < 2 + len) break;
      out.push(this.pending.subarray(2, 2 + len));
      this.pending = this.pending.subarray(2 + len);
    }
    return out;
  }

  /** Bytes of an incomplete message held back. */
  get buffered(): number {
    return this.pending.length;
  }
}
