/** Copy-free ingress to instances on the gateway node itself: new external TCP connections to an exposure's host
 * port are handed by the kernel straight to the program's own listening socket (BPF sk_lookup, native/sklookup.h),
 * so no proxy stands in the path. Also judges, at accept, the connections that arrive that way (see
 * `steeredClient`): they reach the program with the gateway's address:hostPort as their local end and the outside
 * client as their peer, which no generator reported.
 *
 * Locality first (as Kubernetes' externalTrafficPolicy: Local): while an exposed service has instances on the gateway
 * node, this gateway's host port goes to them only; the relay forwards when it has none (see docs/ingress-local.md).
 * The BPF program is loaded on the first steer; when the kernel has no sk_lookup or the daemon lacks
 * CAP_BPF/CAP_NET_ADMIN, `steer` says false once and for all and the caller keeps the relay. */
import type { Logger } from 'pino';
import { SyscallError } from '../errors.js';
import type { Endpoint } from '../table/endpoint.js';
import type { AppRecord } from '../trap/apps.js';
import type { SteeredVerdict } from '../trap/client-identities.js';

/** At most this many listening sockets per host port (native/sklookup.h AS_SKL_SLOTS). */
export const MAX_LISTENERS = 8;

/** The native calls steering makes (src/native/binding.ts); injected in tests. */
export interface SteeringNative {
  skLookupOpen(): number;
  skLookupSet(h: number, port: number, fds: number[]): void;
  skLookupDelete(h: number, port: number): void;
  skLookupClose(h: number): void;
  pidGetFd(pid: number, fd: number): number;
  close(fd: number): void;
}

/** What this node's ingress says now (gateway/ingress): whether it is a gateway, and which service (its virtual
 * endpoint "vip:port") an exposure publishes at a host port. Read at every steered accept, so an exposure withdrawn
 * or a gateway flag dropped stops steered connections at once, even before `unsteer` runs. */
export interface ExposureView {
  isGateway(): boolean;
  serviceAt(hostPort: number): string | undefined;
}

/** A program's listening socket: its process and descriptor number there (see listener-fds.ts). */
export interface Listener {
  pid: number;
  fd: number;
  /** The app that holds it: only its accepts take connections steered to this port. */
  appId: string;
}

export interface SteeringStats {
  /** Steered connections accepted as external clients / refused at accept (port no longer exposed, not a gateway). */
  accepted: number;
  refused: number;
  /** Of the accepted, those the server's generator answered by itself from the decision table (no AS_ACCEPT to the
   * daemon: native/gen_ingress.c); the others the daemon answered (steeredClient). */
  decidedByGenerator: number;
}

/** What `status` shows. */
export interface SteeringStatus extends SteeringStats {
  /** null: not tried yet (nothing steered); false: unavailable (`reason`), the relay serves. */
  available: boolean | null;
  reason?: string;
  /** Host ports steered now, and the service each goes to. */
  ports: Record<string, string>;
}

interface Steered {
  service: string;
  apps: Set<string>;
}

/** Where the client socket of a connection was made, by the kernel's word (daemon/sockguard.ts socketOrigin):
 * 'generator' = a trapped program's; undefined = could not be read. */
export type ClientOrigin = (client: Endpoint, server: Endpoint) => 'generator' | 'other' | 'gone' | undefined;

export interface SteeringOptions {
  /** Why steering is turned off (`--no-ingress-steering`); steer then always says false. */
  off?: string;
  /** With the socket guard: tells a trapped program of this node from an outside client. Steering takes every local
   * address of the node, also those the relay does not listen on and the doors do not close (a second address of
   * the gateway): without this check a trapped program could connect there and pass for an outside client. */
  origin?: ClientOrigin;
  /** The steered ports changed (steer, unsteer, close): the decision table publishes them (trap/decision-table.ts). */
  onChange?: () => void;
}

const NO_EXPOSURES: ExposureView = { isGateway: () => false, serviceAt: () => undefined };

export class Steering {
  private handle: number | undefined;
  private unavailable: string | undefined;
  private readonly ports = new Map<number, Steered>();
  readonly stats: SteeringStats = { accepted: 0, refused: 0, decidedByGenerator: 0 };
  /** Set by the daemon's ingress wiring; until then nothing steered is ever accepted. */
  view: ExposureView = NO_EXPOSURES;

  constructor(
    private readonly native: SteeringNative,
    private readonly log: Logger,
    private readonly opts: SteeringOptions = {},
  ) {
    this.unavailable = opts.off;
  }

  /** Whether the kernel steers for us (loads the program on first use). */
  available(): boolean {
    if (this.handle !== undefined) return true;
    if (this.unavailable !== undefined) return false;
    try {
      this.handle = this.native.skLookupOpen();
      this.log.info('sk_lookup steering loaded: exposures with instances on this node bypass the relay');
      return true;
    } catch (e) {
      this.unavailable = e instanceof SyscallError ? `${e.code}: ${e.code === 'EOPNOTSUPP' ? 'the kernel has no BPF sk_lookup (5.9 or later)' : e.code === 'EPERM' ? 'CAP_BPF and CAP_NET_ADMIN are needed' : e.message}` : String(e);
      this.log.warn({ reason: this.unavailable }, 'sk_lookup steering unavailable: exposures keep the relay on this node');
      return false;
    }
  }

  /** New TCP connections to hostPort (any local address of this node) go straight to one of `listeners` (the
   * service `service`'s instances on this node, up to MAX_LISTENERS; one picked at random per connection),
   * replacing what the port had. Takes a duplicate of each listener (pidfd_getfd), hands it to the kernel's map and
   * closes it. Returns false when nothing could be steered (no sk_lookup, no listener could be taken): the caller
   * keeps the relay. A listener whose process is gone is skipped. */
  steer(hostPort: number, listeners: Listener[], service: string): boolean {
    if (!Number.isInteger(hostPort) || hostPort < 1 || hostPort > 65535) throw new RangeError(`bad host port ${hostPort}`);
    if (!this.available()) return false;
    const h = this.handle as number;
    const fds: number[] = [];
    const apps = new Set<string>();
    try {
      for (const l of listeners.slice(0, MAX_LISTENERS)) {
        try {
          fds.push(this.native.pidGetFd(l.pid, l.fd));
          apps.add(l.appId);
        } catch (e) {
          this.log.debug({ pid: l.pid, fd: l.fd, err: (e as Error).message }, 'steering: listener not taken');
        }
      }
      if (fds.length === 0) {
        this.unsteer(hostPort);
        return false;
      }
      /* the apps first, so that the first steered connection's accept already knows them */
      this.ports.set(hostPort, { service, apps });
      try {
        this.native.skLookupSet(h, hostPort, fds);
      } catch (e) {
        this.ports.delete(hostPort); /* the native side removed the port: the normal lookup (the relay) serves */
        this.opts.onChange?.();
        this.log.warn({ hostPort, service, err: (e as Error).message }, 'steering: port not steered');
        return false;
      }
      this.log.info({ hostPort, service, listeners: fds.length }, 'host port steered to local instances');
      this.opts.onChange?.();
      return true;
    } finally {
      for (const fd of fds) this.native.close(fd); /* the kernel's map holds its own references */
    }
  }

  /** The port goes back to the normal lookup (the relay's listener, or nothing). */
  unsteer(hostPort: number): void {
    if (!this.ports.delete(hostPort)) return;
    this.opts.onChange?.();
    if (this.handle === undefined) return;
    try {
      this.native.skLookupDelete(this.handle, hostPort);
    } catch (e) {
      if (!(e instanceof SyscallError && e.code === 'ENOENT')) throw e;
    }
    this.log.info({ hostPort }, 'host port no longer steered');
  }

  /** Host ports steered now. */
  steeredPorts(): number[] {
    return [...this.ports.keys()];
  }

  /** The (host port, app) pairs whose steered connections steeredClient would accept now, but for the origin check:
   * none unless this node is a gateway, and a port only while its exposure is the steered service's. The decision
   * table publishes them, and the generators answer those accepts themselves (native/gen_ingress.c) when the peer is
   * not of this host (whose origin the daemon checks). */
  accepting(): Array<{ hostPort: number; appId: string }> {
    if (!this.view.isGateway()) return [];
    const out: Array<{ hostPort: number; appId: string }> = [];
    for (const [hostPort, s] of this.ports) {
      if (this.view.serviceAt(hostPort) !== s.service) continue;
      for (const appId of s.apps) out.push({ hostPort, appId });
    }
    return out;
  }

  /** Detaches the program: every steered port goes back to the normal lookup. */
  close(): void {
    const had = this.ports.size > 0;
    this.ports.clear();
    if (had) this.opts.onChange?.();
    if (this.handle !== undefined) this.native.skLookupClose(this.handle);
    this.handle = undefined;
  }

  /** At accept (client-identities.ts): a connection from `peer` that reached `app`'s listener at local end `local`.
   * Steered (local.port is a host port steered to this app): the outside client is its own identity, when this node
   * is a gateway and the port is still an exposure of the steered service; else refused. Anything else: undefined
   * (not ours: the usual identification, which refuses unknown peers). */
  steeredClient(app: AppRecord, peer: Endpoint, local: Endpoint | undefined): SteeredVerdict | undefined {
    if (!local) return undefined;
    const s = this.ports.get(local.port);
    if (!s || !s.apps.has(app.id)) return undefined;
    let why: string | undefined;
    if (!this.view.isGateway()) why = 'this node is not a gateway';
    else if (this.view.serviceAt(local.port) !== s.service) why = `host port ${local.port} is not an exposure of ${s.service}`;
    else if (this.opts.origin) {
      const o = this.opts.origin(peer, local); /* 'gone': no such client socket here (another host); 'other': not trapped */
      if (o === 'generator') why = 'the client is a trapped program of this node (it may not pass for an outside client)';
      else if (o === undefined) why = "the client socket's origin cannot be read";
    }
    if (why !== undefined) {
      this.stats.refused++;
      return { refused: why };
    }
    this.stats.accepted++;
    return { who: { identity: peer.ip.replace(/^::ffff:/i, ''), port: peer.port, appId: 'external', tags: {} } };
  }

  status(): SteeringStatus {
    const ports: Record<string, string> = {};
    for (const [p, s] of this.ports) ports[String(p)] = s.service;
    const st: SteeringStatus = { ...this.stats, available: this.handle !== undefined ? true : this.unavailable !== undefined ? false : null, ports };
    if (this.unavailable !== undefined) st.reason = this.unavailable;
    return st;
  }
}
