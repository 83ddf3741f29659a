/** The gateway's local instances of exposed services, served without a proxy: for each exposure the ingress hands
 * over (`steerExposure`), the host port is steered (gateway/steering.ts) to the listening sockets of the service's
 * instances on this node, found through the service table (their socket inodes) and the programs' /proc
 * (listener-fds.ts). Kept up to date as instances come and go (the table's events); a port whose last local instance
 * is gone is given back to the normal lookup, where the relay's listener serves it. */
import type { Logger } from 'pino';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';
import { findSocket, type ProcView, procView } from './listener-fds.js';
import { type Listener, MAX_LISTENERS, type Steering } from './steering.js';

export interface LocalIngressDeps {
  nodeName: string;
  table: Pick<ServiceTable, 'all' | 'on'>;
  /** The program's pid of a local app (undefined: not started, or unknown). */
  pidOf: (appId: string) => number | undefined;
  steering: Steering;
  log: Logger;
  proc?: ProcView;
}

export class LocalIngress {
  /** host port -> the exposed service's virtual endpoint "vip:port" (TCP). */
  private readonly wanted = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: LocalIngressDeps) {
    const changed = (e: ServiceEntry): void => {
      if (e.node === deps.nodeName && e.proto === 'tcp' && this.wanted.size > 0) this.schedule();
    };
    deps.table.on('added', changed);
    deps.table.on('removed', changed);
  }

  /** Steers hostPort to this node's instances of the TCP service vip:port while there are any (now, and whenever
   * they change). Returns whether it is steered now; false: no local instance yet, or no sk_lookup (the relay
   * serves). */
  steerExposure(hostPort: number, vip: string, port: number): boolean {
    this.wanted.set(hostPort, `${vip}:${port}`);
    return this.apply(hostPort);
  }

  /** The exposure is gone (or this node stopped being a gateway): the port goes back to the normal lookup. */
  unsteerExposure(hostPort: number): void {
    this.wanted.delete(hostPort);
    this.deps.steering.unsteer(hostPort);
  }

  /** The exposures this node steers for (host port -> service), whether or not an instance is here now. */
  exposures(): Map<number, string> {
    return new Map(this.wanted);
  }

  /** The listening sockets of this node's instances of service "vip:port" (at most MAX_LISTENERS). */
  listeners(service: string): Listener[] {
    const out: Listener[] = [];
    for (const e of this.deps.table.all()) {
      if (out.length >= MAX_LISTENERS) break;
      if (e.node !== this.deps.nodeName || e.proto !== 'tcp' || `${e.vip}:${e.port}` !== service || e.socket === undefined) continue;
      const pid = this.deps.pidOf(e.appId);
      if (pid === undefined) continue;
      const at = findSocket(pid, e.socket, this.deps.proc ?? procView);
      if (at) out.push({ ...at, appId: e.appId });
    }
    return out;
  }

  private apply(hostPort: number): boolean {
    const service = this.wanted.get(hostPort);
    if (service === undefined) return false;
    const ls = this.listeners(service);
    if (ls.length === 0) {
      this.deps.steering.unsteer(hostPort);
      return false;
    }
    return this.deps.steering.steer(hostPort, ls, service);
  }

  /** Instances changed: steer every wanted port again (coalesced; the table emits one event per entry). */
  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      for (const p of this.wanted.keys()) {
        try {
          this.apply(p);
        } catch (e) {
          this.deps.log.warn({ hostPort: p, err: (e as Error).message }, 'steering: refresh failed');
        }
      }
    }, 50);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.wanted.clear();
    this.deps.steering.close();
  }
}
