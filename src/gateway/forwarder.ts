/** The ingress forwarder's interface: what a gateway node runs to take external connections on exposure host ports and
 * carry them to an instance of the exposed service. Two implementations: NodeForwarder (node-forwarder.ts: Node
 * net.Server and a pipe; the fallback) and the C relay process (relay-process.ts). The daemon (ingress.ts) adds and
 * removes routes and hears every connection before its upstream connect completes, so the instance's accept finds the
 * external client's identity already recorded. */
import type { Endpoint } from '../table/endpoint.js';

export interface IngressRoute { id: number; address: string; hostPort: number; vip: string; port: number }
export interface IngressConnection { route: number; client: Endpoint; from: Endpoint; to: Endpoint }
//   client: the external client; from: the forwarder's own socket toward the instance (local endpoint, known right
//   after connect() starts); to: the instance's real endpoint. Emitted BEFORE the upstream connect completes.
export interface IngressRefusal { route: number; client: Endpoint; reason: 'no-instance' | 'all-refused' | 'limit' }
export interface ForwarderStats { accepted: number; forwarded: number; refused: number; active: number; bytes: number }
export interface IngressForwarder {
  add(route: IngressRoute): void;          // listen on address:hostPort and forward to an instance of vip:port
  remove(id: number): void;
  onConnection: (c: IngressConnection) => void;
  onRefusal: (r: IngressRefusal) => void;
  onListenError: (id: number, code: string) => void;   // EADDRINUSE, EACCES…: logged, shown in get exposures
  stats(): ForwarderStats;
  close(): Promise<void>;
}
