/** The control API on `appswitch.sock`: newline-delimited JSON requests and responses over a Unix stream socket.
 *   request:  {"id": 1, "method": "apps", "params": {...}}
 *   response: {"id": 1, "result": ...}  or  {"id": 1, "error": {"code": "ERR_...", "message": "..."}} */

export type ControlMethod = 'info' | 'apps' | 'services' | 'members' | 'status';

export interface ControlRequest {
  id: number;
  method: ControlMethod;
  params?: Record<string, unknown>;
}

export interface ControlError {
  code: string;
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
  /** The resolv.conf `appswitch run` mounts over the program's /etc/resolv.conf. */
  resolvConf: string;
  dnsDomain: string;
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
  refused: number;
  denied: number;
  retried: number;
  unidentified: number;
  members: number;
  /** Client connections to virtual endpoints, by path; fast path on/off for this daemon. */
  connections: { tcp: number; fastpath: number };
  fastpath: boolean;
}

export interface MemberView {
  name: string;
  address: string;
  state: string;
  incarnation: number;
}

export const DEFAULT_STATE_DIR = '/run/appswitch';
export const CONTROL_SOCKET_NAME = 'appswitch.sock';
export const TRAP_SOCKET_NAME = 'trap.sock';
