/** Who is told about connect and accept decisions as they are made (the daemon wires the event bus and the edges of
 * src/events here). Called on the connection path: an implementation must be cheap — no I/O, and no allocation per
 * connection when nobody listens — and must not throw. */
import type { Endpoint } from '../table/endpoint.js';
import type { AppRecord } from './apps.js';

/** Why a connect to a virtual endpoint was refused (not by policy). */
export type RefusedWhy = 'no-service' | 'all-refused' | 'pending-limit';

export interface ConnectObserver {
  /** A connection of this node's client app `appId` (identity `identity`) to the service vip:port was set up over
   * `path`, to the real endpoint `endpoint` ("ip:port"). */
  allowed(appId: string, identity: string, vip: string, port: number, path: 'tcp' | 'fastpath', endpoint: string): void;
  /** A connect of `app` to vip:port was refused: no instance serves it, every instance refused, or the app has
   * --max-pending-per-app connections not accepted yet. */
  refused(app: AppRecord, vip: string, port: number, why: RefusedWhy): void;
  /** A connect of `app` to vip:port was denied by policy. */
  denied(app: AppRecord, vip: string, port: number): void;
  /** A connection from `peer` reached a server of `app` (its listener at `listener`) and no daemon vouched for it:
   * it was dropped at accept. */
  unidentified(app: AppRecord, peer: Endpoint, listener: Endpoint | undefined): void;
}
