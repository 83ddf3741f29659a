/** Keeps the service table in step with the live virtual services of the cluster-object store: each becomes one
 * entry per backend (`vservice/NAME/<i>`, node VSERVICE_NODE, app `vservice:NAME`), so the router, the balancer and
 * its retry of refusing instances, the policy (by the vservice's tags), the decision table and `get services` treat
 * backends as instances of a service. Also answers names (DNS) and which vips and backends virtual services hold.
 * No I/O. */
import type { Logger } from 'pino';
import type { ClusterObject, ClusterObjects } from '../table/cluster-objects.js';
import { type Endpoint, endpointKey } from '../table/endpoint.js';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';
import { formatBackend, VSERVICE_KIND, VSERVICE_NODE, vserviceAppId, type VserviceBody } from './body.js';

/** A live virtual service as this node serves it. */
export interface Vservice extends VserviceBody {
  name: string;
  /** The node that wrote this version, and its version. */
  origin: string;
  version: number;
}

export interface VserviceSyncDeps {
  objects: ClusterObjects;
  table: ServiceTable;
  /** Whether a backend is a daemon's door of a member now (the port pool, a daemon port): such a backend is left out
   * of the table, logged (a member may have joined at that address since the vservice was made). */
  door?: (ep: Endpoint) => string | undefined;
  /** Whether an app holds this address as its identity. A virtual service whose vip an app holds is not served (its
   * entries would mix with the app's instances and take part of its traffic): a copy from gossip is not checked
   * against apps by the node that made it only. Logged; served again once the app is gone (call refresh()). */
  appHolds?: (ip: string) => boolean;
  log: Logger;
}

/** The id prefix of a virtual service's entries. */
const idPrefix = (name: string): string => `vservice/${name}/`;

export class VserviceSync {
  private readonly byName = new Map<string, Vservice>();
  /** Backend endpoints "ip:port" served now (connections there are claimed by no accept); never a member's door,
   * where an appswitch server's accept does wait for the client's report. */
  private backends = new Set<string>();

  constructor(private readonly deps: VserviceSyncDeps) {
    for (const o of deps.objects.list(VSERVICE_KIND)) this.apply(o);
    deps.objects.on('changed', (o) => {
      if (o.kind === VSERVICE_KIND) this.apply(o);
    });
    deps.objects.on('dropped', (o) => {
      if (o.kind === VSERVICE_KIND && !deps.objects.get(o.kind, o.name)) this.apply({ ...o, deleted: true });
    });
  }

  /** Which backends are doors and which vips apps hold now, as text (refresh() re-applies only when it changes). */
  private doorSig = '';

  private doorsNow(): string {
    const { door, appHolds } = this.deps;
    const out: string[] = [];
    for (const v of this.byName.values()) {
      if (appHolds?.(v.vip)) out.push(`${v.name}@${v.vip}`);
      if (door) for (const ep of v.backends) if (door(ep)) out.push(`${v.name}/${endpointKey(ep)}`);
    }
    return out.join(',');
  }

  /** The doors or the apps changed: re-applies the virtual services when that changes what is left out. */
  refresh(): void {
    if (this.doorsNow() === this.doorSig) return;
    for (const o of this.deps.objects.list(VSERVICE_KIND)) this.apply(o);
  }

  private apply(o: ClusterObject): void {
    const { table, log } = this.deps;
    table.removeWhere((e) => e.node === VSERVICE_NODE && e.id.startsWith(idPrefix(o.name)));
    this.byName.delete(o.name);
    if (!o.deleted) {
      const b = o.body as VserviceBody;
      this.byName.set(o.name, { ...b, name: o.name, origin: o.origin, version: o.version });
      if (this.deps.appHolds?.(b.vip)) log.warn({ vservice: o.name, vip: b.vip, origin: o.origin }, 'virtual service not served: an app holds its vip');
      else b.backends.forEach((ep, i) => this.addEntry(o, b, ep, i));
    }
    this.backends = new Set(table.all().flatMap((e) => (e.node === VSERVICE_NODE ? [endpointKey(e.endpoint)] : []))); /* served ones only */
    this.doorSig = this.doorsNow();
    log.debug({ vservice: o.name, deleted: o.deleted === true, origin: o.origin, version: o.version }, 'virtual service applied');
  }

  /** The entry of backend i, unless it is a member's door now. */
  private addEntry(o: ClusterObject, b: VserviceBody, ep: Endpoint, i: number): void {
    const door = this.deps.door?.(ep);
    if (door) {
      this.deps.log.warn({ vservice: o.name, backend: formatBackend(ep), door }, 'virtual service backend left out: it is an appswitch daemon port or pool port of a member');
      return;
    }
    const e: ServiceEntry = {
      id: `${idPrefix(o.name)}${i}`,
      vip: b.vip,
      port: b.port,
      proto: 'tcp',
      node: VSERVICE_NODE,
      endpoint: { ...ep },
      appId: vserviceAppId(o.name),
      name: o.name,
      tags: { ...b.tags },
      version: o.version,
    };
    if (b.lb) e.lb = b.lb;
    this.deps.table.upsert(e);
  }

  /** The live virtual services, by name. */
  list(): Vservice[] {
    return [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get(name: string): Vservice | undefined {
    return this.byName.get(name);
  }

  /** The vip of the virtual service named `name` (DNS), as a list. */
  vipsOf(name: string): string[] {
    const v = this.byName.get(name);
    return v ? [v.vip] : [];
  }

  /** The name of a virtual service whose vip is ip (reverse DNS; and apps may not take that vip). */
  nameOf(ip: string): string | undefined {
    for (const v of this.byName.values()) if (v.vip === ip) return v.name;
    return undefined;
  }

  /** Whether a real endpoint is a backend of a virtual service: a connection there is claimed by no accept of an
   * appswitch server, so no client report is kept for it. */
  isBackend(ep: Endpoint | undefined): boolean {
    return ep !== undefined && this.backends.size > 0 && this.backends.has(endpointKey(ep));
  }
}
