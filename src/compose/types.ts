/** What an appswitch.yaml describes, once loaded and checked (src/compose/file.ts): a project of services, each a
 * command with its identity, environment, readiness check and dependencies. Plain data, no behaviour. */

/** When `appswitch up` starts a service again after it ended: never, after a non-zero exit or a signal, or always. */
export type RestartPolicy = 'no' | 'on-failure' | 'always';

/** How to tell that a service is ready. */
export type ReadyCheck =
  /** The service listens on this port (every replica). */
  | { kind: 'tcp'; port: number }
  /** GET http://SERVICE:port/path answers 2xx or 3xx. `path` starts with '/' and holds only printable ASCII. */
  | { kind: 'http'; port: number; path: string }
  /** An argv; exit status 0 = ready. Run under appswitch, so that service names resolve. */
  | { kind: 'command'; command: string[] };

/** A readiness check and its timing, both in milliseconds (> 0, at most one hour). */
export interface Ready {
  check: ReadyCheck;
  /** Between two attempts; default 500. */
  intervalMs: number;
  /** Give up (the service failed to start) after this long; default 60000. */
  timeoutMs: number;
}

/** One `ports:` entry: the service's PORT, reached from outside at HOSTPORT (same as PORT when not given). */
export interface PortSpec {
  hostPort: number;
  port: number;
}

/** One service of the file. */
export interface ServiceSpec {
  /** As written: a DNS label of 1 to 40 characters, [a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?, no dots. */
  name: string;
  /** The argv; a string command becomes ['/bin/sh', '-c', STRING]. Never empty, argv[0] never empty, no NUL. */
  command: string[];
  /** A vip literal (IPv4 or IPv6, as written), if given; no two services of a file share one. */
  ip?: string;
  /** As `appswitch run --tag` accepts them; never the key `project` (appswitch up adds project=NAME). */
  tags: Record<string, string>;
  /** Names match [A-Za-z_][A-Za-z0-9_]*; values hold no NUL. */
  env: Record<string, string>;
  /** Absolute; default: the file's directory. When given in the file, it existed and was a directory at load. */
  cwd: string;
  /** 1..32, default 1: instances on one vip, load-balanced. */
  replicas: number;
  /** No two entries of a file (any service) share a hostPort; at most 32 per service. */
  ports: PortSpec[];
  ready?: Ready;
  /** Names of services of the same file, each once, never the service itself, no cycles. */
  dependsOn: string[];
  /** Default 'no'. */
  restart: RestartPolicy;
  /** SIGTERM, then SIGKILL after this long; default 10000. */
  stopTimeoutMs: number;
  /** 1-based line of the service's key in the file, for later messages. */
  line: number;
}

/** A whole file. */
export interface ProjectSpec {
  /** The project name: a DNS label of at most 63 characters (see projectNameOk). */
  name: string;
  /** Absolute path of the file. */
  file: string;
  /** Its directory. */
  dir: string;
  /** In start order: every service after its dependencies; among services free to start, file order first. */
  services: ServiceSpec[];
}
