/** Turns the daemon's decisions into events (the bus) and edge counts (the edge store): the one object the daemon
 * hands to the trap side as its ConnectObserver, and calls for apps, services, members and exposures. Connect
 * decisions count on their edge always (no allocation on an existing edge) and build an event only while someone
 * subscribes. No I/O. */
import type { Endpoint } from '../table/endpoint.js';
import type { AppRecord } from '../trap/apps.js';
import type { ConnectObserver, RefusedWhy } from '../trap/observer.js';
import type { EventBus } from './bus.js';
import type { EdgeStore } from './edges.js';
import type { AppRef, ServiceRef } from './types.js';

/** An app as the directory knows it (this node's or another's). */
export interface AppInfo {
  id: string;
  node: string;
  identity: string;
  name?: string;
}

/** A service instance as the service table knows it. */
export interface ServiceInfoLike {
  vip: string;
  port: number;
  proto: string;
  name?: string;
  node: string;
  appId: string;
  endpoint: Endpoint;
}

/** An exposure as the ingress lists it (gateway/ingress.ts ExposureView). */
export interface ExposureInfo {
  vip: string;
  port: number;
  hostPort: number;
  state: string;
  detail?: string;
}

export interface MemberChange {
  name: string;
  address: string;
  state: string;
  previous?: string;
}

export interface RecorderDeps {
  node: string;
  bus: EventBus;
  edges: EdgeStore;
  /** An app of the cluster by id (the app directory). */
  app: (appId: string) => AppInfo | undefined;
  /** A service's name: its app's, or its virtual service's; null when it has none. */
  serviceName: (vip: string, port: number) => string | null;
  /** The service whose instance listens at a real endpoint "ip:port" (the server side of an unidentified accept). */
  serviceAt?: (endpoint: string) => { vip?: string; port?: number } | undefined;
}

const REFUSED_DETAIL: Record<RefusedWhy, string> = {
  'no-service': 'no such service',
  'all-refused': 'every instance refused',
  'pending-limit': 'the app has --max-pending-per-app connections not accepted yet',
};

export function appRef(a: AppInfo): AppRef {
  return { app: a.id, name: a.name ?? null, identity: a.identity, node: a.node };
}

export class DecisionRecorder implements ConnectObserver {
  /** Exposures as last seen ("vip:port/hostPort" -> state), to tell what changed. */
  private exposuresSeen = new Map<string, ExposureInfo>();

  constructor(private readonly deps: RecorderDeps) {}

  private clientOf(app: AppRecord): AppRef {
    return { app: app.id, name: app.name ?? null, identity: app.identity, node: this.deps.node };
  }

  private serviceRef(vip: string, port: number): ServiceRef {
    return { vip, port, name: this.deps.serviceName(vip, port) };
  }

  allowed(appId: string, identity: string, vip: string, port: number, path: 'tcp' | 'fastpath', endpoint: string): void {
    this.deps.edges.connected(appId, vip, port, path === 'fastpath');
    if (!this.deps.bus.hasSubscribers) return;
    const a = this.deps.app(appId);
    const client = a ? appRef(a) : { app: appId, name: null, identity, node: this.deps.node };
    this.deps.bus.emit({ type: 'connect.allowed', client, service: this.serviceRef(vip, port), path, endpoint });
  }

  refused(app: AppRecord, vip: string, port: number, why: RefusedWhy): void {
    this.deps.edges.refused(app.id, vip, port);
    if (!this.deps.bus.hasSubscribers) return;
    this.deps.bus.emit({ type: 'connect.refused', client: this.clientOf(app), service: this.serviceRef(vip, port), detail: REFUSED_DETAIL[why] });
  }

  denied(app: AppRecord, vip: string, port: number): void {
    this.deps.edges.denied(app.id, vip, port);
    if (!this.deps.bus.hasSubscribers) return;
    this.deps.bus.emit({ type: 'connect.denied', client: this.clientOf(app), service: this.serviceRef(vip, port), detail: 'policy' });
  }

  /** The server side is the event's `service`: the service whose instance listens there, else the server app's
   * identity (port 0: unknown); `client` is left out (nobody vouched for it: only its address is known, in `peer`). */
  unidentified(app: AppRecord, peer: Endpoint, listener: Endpoint | undefined): void {
    if (!this.deps.bus.hasSubscribers) return;
    const server = `${app.name ?? app.identity} (app ${app.id})`;
    const at = listener ? this.deps.serviceAt?.(`${listener.ip.replace(/^::ffff:/i, '')}:${listener.port}`) : undefined;
    const service: ServiceRef =
      at?.vip !== undefined && at.port !== undefined ? this.serviceRef(at.vip, at.port) : { vip: app.identity, port: 0, name: app.name ?? null };
    this.deps.bus.emit({
      type: 'accept.unidentified',
      service,
      peer: `${peer.ip}:${peer.port}`,
      detail: `dropped at accept by ${server}${listener ? ` on ${listener.ip}:${listener.port}` : ''}: no daemon vouched for the client`,
    });
  }

  appStarted(a: AppInfo): void {
    if (this.deps.bus.hasSubscribers) this.deps.bus.emit({ type: 'app.started', client: appRef(a) });
  }

  appEnded(a: AppInfo): void {
    if (this.deps.bus.hasSubscribers) this.deps.bus.emit({ type: 'app.ended', client: appRef(a) });
  }

  serviceUp(e: ServiceInfoLike): void {
    if (this.deps.bus.hasSubscribers) this.deps.bus.emit({ type: 'service.up', service: this.entryRef(e), detail: this.entryDetail(e) });
  }

  serviceDown(e: ServiceInfoLike): void {
    if (this.deps.bus.hasSubscribers) this.deps.bus.emit({ type: 'service.down', service: this.entryRef(e), detail: this.entryDetail(e) });
  }

  private entryRef(e: ServiceInfoLike): ServiceRef {
    return { vip: e.vip, port: e.port, name: e.name ?? null };
  }

  private entryDetail(e: ServiceInfoLike): string {
    return `${e.proto} instance ${e.endpoint.ip}:${e.endpoint.port} on node ${e.node} (app ${e.appId})`;
  }

  memberState(m: MemberChange): void {
    if (!this.deps.bus.hasSubscribers) return;
    this.deps.bus.emit({ type: 'member.state', member: { name: m.name, address: m.address, state: m.state }, detail: `previously ${m.previous ?? 'unknown (new)'}` });
  }

  /** The exposures now: one exposure.changed per exposure that appeared, went, or changed state since the last call. */
  exposures(list: readonly ExposureInfo[]): void {
    const next = new Map<string, ExposureInfo>();
    for (const x of list) next.set(`${x.vip}:${x.port}/${x.hostPort}`, x);
    const before = this.exposuresSeen;
    this.exposuresSeen = next;
    if (!this.deps.bus.hasSubscribers) return;
    for (const [k, x] of next) {
      const old = before.get(k);
      if (old?.state === x.state) continue;
      const why = x.detail ? `: ${x.detail}` : '';
      this.deps.bus.emit({ type: 'exposure.changed', service: this.serviceRef(x.vip, x.port), detail: `host port ${x.hostPort}: ${x.state}${why}${old ? ` (was ${old.state})` : ''}` });
    }
    for (const [k, x] of before) {
      if (!next.has(k)) this.deps.bus.emit({ type: 'exposure.changed', service: this.serviceRef(x.vip, x.port), detail: `host port ${x.hostPort}: removed` });
    }
  }
}
