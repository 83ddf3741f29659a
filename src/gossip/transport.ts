// The I/O boundary of the gossip layer: an unreliable datagram channel plus a reliable request/response channel.
// Callback based on purpose: the protocol core never awaits, so it runs the same on real sockets and on the
// virtual clock (a Promise continuation would run outside virtual time).

import { GossipError } from './errors.js';

/** Largest datagram the protocol ever sends; receivers drop anything bigger. */
export const MAX_PACKET_SIZE = 1400;

/** Default cap on one stream frame (request or response) in bytes. */
export const DEFAULT_MAX_STREAM_BYTES = 8 * 1024 * 1024;

/** Handler for an inbound datagram. `from` is the sender's "host:port". */
export type PacketHandler = (from: string, buf: Uint8Array) => void;

/**
 * Handler for an inbound stream request. It must call `reply` exactly once: with a response buffer, or with
 * `undefined` to close the stream without answering (the requester then sees an error).
 */
export type StreamHandler = (from: string, req: Uint8Array, reply: (resp: Uint8Array | undefined) => void) => void;

/** Completion callback of {@link Transport.request}: exactly one of `err` / `resp` is set. */
export type StreamCallback = (err: GossipError | undefined, resp: Uint8Array | undefined) => void;

/**
 * What the gossip layer needs from the network (memberlist's transport.go, reduced to what we use).
 *
 * Contract:
 * - `sendPacket` is fire-and-forget and may silently lose, reorder or duplicate datagrams; it never throws for
 *   network reasons (errors are logged by the implementation). Buffers are not retained after the call.
 * - `request` opens a reliable stream to `addr`, sends one framed request, waits for one framed response, closes.
 *   `cb` is called exactly once, with `ERR_GOSSIP_TIMEOUT`, `ERR_GOSSIP_UNREACHABLE`,
 *   `ERR_GOSSIP_FRAME_TOO_LARGE` or `ERR_GOSSIP_TRANSPORT_CLOSED` on failure.
 * - Handlers registered with `onPacket` / `onStream` replace earlier ones.
 * - After `close()` nothing is delivered and sends are no-ops; pending requests fail with ERR_GOSSIP_TRANSPORT_CLOSED.
 * - Addresses are "host:port"; IPv6 hosts are bracketed: "[::1]:7946".
 */
export interface Transport {
  /** The "host:port" other members should use to reach this transport. */
  readonly localAddress: string;
  sendPacket(addr: string, buf: Uint8Array): void;
  onPacket(cb: PacketHandler): void;
  request(addr: string, req: Uint8Array, timeoutMs: number, cb: StreamCallback): void;
  onStream(cb: StreamHandler): void;
  close(): void;
}

/** A parsed "host:port". `host` has no brackets. */
export interface HostPort {
  host: string;
  port: number;
  family: 4 | 6 | 0;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;

/** Parses "host:port" / "[v6]:port"; returns undefined when malformed. Port 0 is accepted (bind to any). */
export function tryParseAddress(addr: string): HostPort | undefined {
  if (typeof addr !== 'string' || addr.length === 0 || addr.length > 300) return undefined;
  let host: string;
  let portStr: string;
  let family: 4 | 6 | 0;
  if (addr.startsWith('[')) {
    const end = addr.indexOf(']');
    if (end < 0 || addr[end + 1] !== ':') return undefined;
    host = addr.slice(1, end);
    portStr = addr.slice(end + 2);
    if (!IPV6.test(host) || !host.includes(':')) return undefined;
    family = 6;
  } else {
    const i = addr.lastIndexOf(':');
    if (i <= 0) return undefined;
    host = addr.slice(0, i);
    portStr = addr.slice(i + 1);
    if (host.includes(':')) return undefined; // bare IPv6 must be bracketed
    if (IPV4.test(host)) family = 4;
    else if (HOSTNAME.test(host)) family = 0;
    else return undefined;
  }
  if (!/^\d{1,5}$/.test(portStr)) return undefined;
  const port = Number(portStr);
  if (port > 65535) return undefined;
  return { host, port, family };
}

/** Like {@link tryParseAddress} but throws `ERR_GOSSIP_BAD_ADDRESS`. */
export function parseAddress(addr: string): HostPort {
  const hp = tryParseAddress(addr);
  if (hp === undefined) throw new GossipError('ERR_GOSSIP_BAD_ADDRESS', `invalid address ${JSON.stringify(addr)}`);
  return hp;
}

/** Formats host and port back to "host:port", bracketing IPv6. */
export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
