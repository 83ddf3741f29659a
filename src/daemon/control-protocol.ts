/** The control API on `appswitch.sock`: newline-delimited JSON requests and responses over a Unix stream socket.
 *   request:  {"id": 1, "method": "apps", "params": {...}}
 *   response: {"id": 1, "result": ...}  or  {"id": 1, "error": {"code": "ERR_...", "message": "..."}}
 * Only root, the daemon's own user and members of the daemon's group (`--group`, default appswitch) are served.
 * Every request is checked against METHODS before it reaches the daemon; see ControlErrorCode for the answers. */
import type { LbStrategy } from '../table/balancer.js';
import type { SteeringStatus } from '../gateway/steering.js';
import type { ExposureView, IngressStatus } from '../gateway/ingress.js';

/** Methods and the parameters each accepts (name -> type); a request with another method or parameter is refused. */
export const METHODS = {
  /** project: the resolv.conf of that `appswitch up` project (see Daemon.projectResolvConf). */
  info: { project: 'string' },
  status: {},
  apps: {},
  services: {},
  members: {},
  connections: {},
  expose: { vip: 'string', port: 'number', hostPort: 'number' },
  unexpose: { vip: 'string', port: 'number' },
  exposures: {},
  createVservice: { name: 'string', ip: 'string', port: 'number', backends: 'string[]', lb: 'string', tags: 'string[]' },
  deleteVservice: { name: 'string' },
  vservices: {},
} as const satisfies Record<string, Record<string, ParamType>>;

export type ParamType = 'string' | 'number' | 'boolean' | 'string[]';
export type ControlMethod = keyof typeof METHODS;

/** Methods that change the application network (the service table, exposures, virtual services): served only to
 * root, the privilege `appswitch run` needs; the daemon's group may read but not change (ERR_PERMISSION). */
export const MUTATING: ReadonlySet<ControlMethod> = new Set<ControlMethod>(['expose', 'unexpose', 'createVservice', 'deleteVservice']);

/** Parameters a method cannot do without (ERR_BAD_PARAMS when one is missing). */
export const REQUIRED: Partial<Record<ControlMethod, readonly string[]>> = {
  expose: ['vip', 'port'],
  unexpose: ['vip', 'port'],
  createVservice: ['name', 'ip', 'port', 'backends'],
  deleteVservice: ['name'],
};

/** Stable error codes of the control API (their meaning never changes):
 * - ERR_BAD_JSON: the line is not JSON (or not UTF-8 text).
 * - ERR_BAD_REQUEST: JSON, but not a request object: no string `method`, `id` not a non-negative integer, or
 *   `params` not an object.
 * - ERR_UNKNOWN_METHOD: `method` is not one of METHODS.
 * - ERR_BAD_PARAMS: a parameter the method does not take, or of the wrong type.
 * - ERR_TOO_LARGE: the line is longer than MAX_REQUEST_BYTES (the rest of it is skipped; the connection stays).
 * - ERR_PERMISSION: the peer is not root and not in the daemon's group (the connection is closed), or a group member
 *   called a MUTATING method (the connection stays).
 * - ERR_NOT_FOUND: a mutating call names something that does not exist (a virtual service, an exposure).
 * - ERR_CONFLICT: a mutating call would clash with what exists (a vip or a host port already in use).
 * - ERR_INTERNAL: the daemon failed to answer a valid request (logged). */
export type ControlErrorCode =
  | 'ERR_BAD_JSON'
  | 'ERR_BAD_REQUEST'
  | 'ERR_UNKNOWN_METHOD'
  | 'ERR_BAD_PARAMS'
  | 'ERR_TOO_LARGE'
  | 'ERR_PERMISSION'
  | 'ERR_NOT_FOUND'
  | 'ERR_CONFLICT'
  | 'ERR_INTERNAL';

/** What a method handler throws to answer with a stable code instead of ERR_INTERNAL (a field with a bad value:
 * ERR_BAD_PARAMS; ERR_NOT_FOUND; ERR_CONFLICT). */
export class ControlCallError extends Error {
  constructor(
    readonly code: ControlErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Longest request line the daemon reads (bytes, without the newline). */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface ControlRequest {
  id: number;
  method: ControlMethod;
  params?: Record<string, unknown>;
}

export interface ControlError {
  code: ControlErrorCode;
  message: string;
}

export interface ControlResponse {
  id: number;
  result?: unknown;
  error?: ControlError;
}

export interface InfoResult {
  version: string;
  node: string;
  nodeAddress: string;
  trapSocket: string;
  vipCidrs: string[];
  ports: string;
  /** The resolv.conf `appswitch run` mounts over the program's /etc/resolv.conf; with `project`, that project's
   * (its search list starts with PROJECT.DOMAIN, so a bare name resolves inside the project first). */
  resolvConf: string;
  dnsDomain: string;
  /** false when the daemon runs --insecure-no-sockguard: `appswitch run` then starts programs without the socket
   * guard (native/sockguard.h). Absent from older daemons: the guard is on. */
  sockguard?: boolean;
  /** A private daemon (`appswitch daemon --private`): `appswitch run` passes --private to the launcher, which then
   * makes a user namespace of its own; owner: the uid it runs as, the only user (besides root) it admits. */
  private?: boolean;
  owner?: number;
}

export interface AppView {
  id: string;
  pid?: number;
  ip?: string;
  identity: string;
  name?: string;
  tags: Record<string, string>;
  cmd: string[];
  startedAt: string;
  services: string[];
  /** The uid the app belongs to (its vip and name): who ran `appswitch run` (a member through the setuid launcher,
   * or SUDO_UID under sudo; 0 for root). */
  owner: number;
}

/** A virtual service as the control API shows it. */
export interface VserviceView {
  name: string;
  ip: string;
  port: number;
  proto: 'tcp';
  backends: string[];
  /** Its own strategy, or null: the daemon's --lb. */
  lb: LbStrategy | null;
  tags: Record<string, string>;
  /** The node that wrote this version, and when (the version is a time in ms). */
  origin: string;
  version: number;
}

export interface ServiceView {
  vip: string;
  port: number;
  proto: string;
  endpoint: string;
  node: string;
  app: string;
  name?: string;
  tags: Record<string, string>;
}

export interface StatusResult extends InfoResult {
  uptimeSeconds: number;
  apps: number;
  services: number;
  trapMessages: number;
  /** Trapped calls answered (bind, listen, connect/sendto, accept) since start, and per second over the last 10 s. */
  traps: number;
  trapsPerSecond: number;
  /** Cluster members by state (alive, suspect, dead, left; conflict: another live node with this node's name). */
  memberStates: Record<string, number>;
  /** Live nodes that use this node's name from another address: neither sees the other until one is renamed. */
  nameConflicts: NameConflictView[];
  /** Connections this daemon set up that are still open (see `connections`), by path. */
  openConnections: { tcp: number; fastpath: number };
  /** The group allowed on the sockets besides root, or null when it does not exist (root only). */
  group: string | null;
  refused: number;
  denied: number;
  retried: number;
  unidentified: number;
  /** Datagram senders nobody vouched for since start (their datagrams were dropped). */
  udpUnidentified: number;
  /** Fast-path connections whose placeholder the daemon still holds (waiting for the server's accept). */
  pendingOffers: number;
  /** Apps restored after a restart whose generator has not reconnected yet. */
  awaitingReconnect: number;
  members: number;
  /** Client connections to virtual endpoints, by path; fast path on/off for this daemon. */
  connections: { tcp: number; fastpath: number };
  fastpath: boolean;
  /** Connects and datagram sends refused because they named a daemon port or a pool port directly. */
  daemonPortRefused: number;
  /** Per-app limits reached since start: binds refused (services), connects sent over TCP (offers), connects
   * refused (pending). */
  limitsReached: { services: number; offers: number; pending: number };
  /** Unexpected exceptions caught since start, by module (each cost one request; see daemon/internal-errors.ts). */
  internalErrors?: Record<string, number>;
  /** sk_lookup steering of exposures' host ports to local instances (gateway/steering.ts). */
  steering?: SteeringStatus;
  /** Connections refused at accept whose client was said to be external when the service was not exposed or the
   * answering node was not a live gateway (see docs/ingress.md). */
  externalRefused?: number;
  /** Ingress: whether this node is a gateway, its forwarder's counts, the exposures active and in conflict. */
  ingress?: IngressStatus;
  /** Connects and datagram sends to outside addresses denied by the egress policy since start. */
  egressDenied?: number;
  /** Egress mode, role and counters (docs/egress.md). */
  egress?: EgressStatus;
}

/** The answer of `expose` and `unexpose`: the exposure's row, and a warning (no live gateway yet). */
export interface ExposeResult {
  exposure: ExposureView | null;
  warning?: string;
}

/** The egress part of `status`. */
export interface EgressStatus {
  mode: 'direct' | 'via-gateway';
  /** This node is an egress gateway. */
  gateway: boolean;
  /** Egress policy rules (0: everything allowed). */
  rules: number;
  denied: number;
  /** Connects that found no live egress gateway (ENETUNREACH). */
  noGateway: number;
  /** Connects sent through an egress gateway. */
  viaGateway: number;
  /** Datagrams to outside addresses refused in via-gateway mode. */
  udpRefused: number;
  /** Live egress gateways this node sees (other than itself). */
  liveGateways: number;
  /** This gateway's egress proxy: connections forwarded, refused (by reason), open now. */
  proxy?: { forwarded: number; refused: number; active: number; refusals: Record<string, number> };
}

export type { ConnectionView } from '../trap/connections.js';
export type { ExposureView, IngressStatus } from '../gateway/ingress.js';

/** A member as this node sees it; state `conflict` is another live node using this node's name (from `address`),
 * whose incarnation is not known (null). */
export interface MemberView {
  name: string;
  address: string;
  state: string;
  incarnation: number | null;
}

/** Another live node that uses this node's name (see src/gossip/conflicts.ts). */
export interface NameConflictView {
  /** The other node's gossip address. */
  address: string;
  /** When this node found it (ISO 8601). */
  since: string;
}

export const DEFAULT_STATE_DIR = '/run/appswitch';
export const CONTROL_SOCKET_NAME = 'appswitch.sock';
export const TRAP_SOCKET_NAME = 'trap.sock';
