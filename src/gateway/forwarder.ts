/** The gateway's forwarder of external TCP connections to instances of exposed services (issue 13, ingress). The
 * daemon owns the routes; an implementation listens on each route's address:hostPort and forwards every connection
 * to an instance of vip:port. Implementations: RelayForwarder (relay-process.ts, the C relay process: the default) and
 * NodeForwarder (node-forwarder.ts: Node net.Server and a pipe; the fallback when the relay cannot run). */
import type { Endpoint } from '../table/endpoint.js';

export interface IngressRoute {
  id: number;
  address: string;
  hostPort: number;
  vip: string;
  port: number;
}

export interface IngressRefusal {
  route: number;
  client: Endpoint;
  reason: 'no-instance' | 'all-refused' | 'limit';
}

export interface ForwarderStats {
  accepted: number;
  forwarded: number;
  refused: number;
  active: number;
  bytes: number;
}

export interface IngressForwarder {
  /** The key of the preamble every connection to an instance starts with (native/preamble.h); given before the first
   * route. */
  setPreambleKey(key: Buffer): void;
  /** Listen on address:hostPort and forward to an instance of vip:port. */
  add(route: IngressRoute): void;
  remove(id: number): void;
  onRefusal: (r: IngressRefusal) => void;
  onListenError: (id: number, code: string) => void;
  stats(): ForwarderStats;
  close(): Promise<void>;
}
