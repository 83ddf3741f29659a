export interface AppRef { app: string; name: string | null; identity: string; node: string }
export interface ServiceRef { vip: string; port: number; name: string | null }
export type EventType =
  | 'app.started' | 'app.ended'
  | 'service.up' | 'service.down'
  | 'member.state'
  | 'connect.allowed' | 'connect.refused' | 'connect.denied'
  | 'accept.unidentified'
  | 'exposure.changed'
  | 'events.lost';
export interface AppswitchEvent {
  seq: number;            // per daemon, increasing from 1 (a restart starts again at 1)
  time: string;           // ISO 8601
  node: string;           // the node that saw it
  type: EventType;
  client?: AppRef;        // connect.*, app.*
  service?: ServiceRef;   // connect.*, service.*, exposure.changed
  path?: 'fastpath' | 'tcp';
  endpoint?: string;      // the real endpoint chosen (connect.allowed), "ip:port"
  member?: { name: string; address: string; state: string };   // member.state
  peer?: string;          // accept.unidentified: the client's "ip:port"
  detail?: string;        // free text (errno, reason, exposure state...)
  lost?: number;          // events.lost: how many this subscriber missed
}
export interface SubscribeOptions { maxBuffered?: number; app?: string; types?: EventType[] }
/** A subscriber's queue: bounded; when full the oldest are dropped and the next read starts with an events.lost. */
export interface Subscription {
  /** Resolves with what is queued (at least one event), waiting until there is one; rejects once closed. */
  next(): Promise<AppswitchEvent[]>;
  close(): void;
}
export interface EventSource { subscribe(opts?: SubscribeOptions): Subscription }

export interface EdgeView {
  client: AppRef;
  service: ServiceRef;
  connections: number;     // total allowed since the edge appeared
  active: number;          // open now (as far as this node knows)
  ratePerSecond: number;   // new connections/s over the last 10 s
  refused: number;         // ECONNREFUSED and the like (no instance answered)
  denied: number;          // policy denials
  fastpath: number;        // of `connections`, how many went over the fast path
  tcp: number;             // ... over TCP
  lastSeen: string;        // ISO 8601
}
export interface EdgesView {
  scope: 'node' | 'cluster';
  node: string;
  edges: EdgeView[];
  /** cluster scope: nodes that did not answer (their edges are missing), and nodes whose list was cut at the cap */
  missing: string[];
  truncated: string[];
}
export interface EdgeSource { edges(scope: 'node' | 'cluster'): Promise<EdgesView> }

/** Every event type, in the order docs/events.md lists them (src/api/routes.ts checks at compile time that none is
 * missing). */
export const EVENT_TYPES = [
  'app.started',
  'app.ended',
  'service.up',
  'service.down',
  'member.state',
  'connect.allowed',
  'connect.refused',
  'connect.denied',
  'accept.unidentified',
  'exposure.changed',
  'events.lost',
] as const satisfies readonly EventType[];
