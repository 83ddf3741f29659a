/** The control calls of virtual services: `createVservice`, `deleteVservice` (mutating: root only, see
 * daemon/control-protocol.ts MUTATING) and `vservices`. Every field is checked here, before anything changes: a bad
 * value is ERR_BAD_PARAMS with a message naming the field, a clash with what exists ERR_CONFLICT, a missing name
 * ERR_NOT_FOUND. Create on an existing name replaces that virtual service (the answer says `replaced: true`). */
import { ControlCallError, type VserviceView } from './control-protocol.js';
import { AppswitchError } from '../errors.js';
import type { VirtualRanges } from '../table/addresses.js';
import { LB_STRATEGIES, type LbStrategy } from '../table/balancer.js';
import type { ClusterObjects } from '../table/cluster-objects.js';
import type { AppDirectory } from '../table/directory.js';
import type { Endpoint } from '../table/endpoint.js';
import type { ServiceTable } from '../table/service-table.js';
import { parseTags } from '../trap/apps.js';
import { badBackendAddress, badVip, badVserviceName, formatBackend, MAX_BACKENDS, parseBackend, VSERVICE_KIND, VSERVICE_NODE, vserviceAppId, type VserviceBody, vserviceValidator } from '../vservice/body.js';
import { type Vservice, VserviceSync } from '../vservice/table-sync.js';
import type { Logger } from 'pino';
import type { DaemonPortGuard } from '../policy/daemon-ports.js';
import ipaddr from 'ipaddr.js';


export interface VserviceControlDeps {
  objects: ClusterObjects;
  sync: VserviceSync;
  table: ServiceTable;
  directory: AppDirectory;
  ranges: VirtualRanges;
  /** The kind of daemon door (a member's daemon port or pool port) `ip:port` is, or undefined. */
  door: (ip: string, port: number) => string | undefined;
  /** Where creates and deletes are logged. */
  log?: Logger;
}

const bad = (msg: string): ControlCallError => new ControlCallError('ERR_BAD_PARAMS', msg);

export function viewOf(v: Vservice): VserviceView {
  return { name: v.name, ip: v.vip, port: v.port, proto: 'tcp', backends: v.backends.map(formatBackend), lb: v.lb ?? null, tags: v.tags, origin: v.origin, version: v.version };
}

export class VserviceControl {
  constructor(private readonly deps: VserviceControlDeps) {}

  /** Answers one of the three control methods (logging creates and deletes). */
  call(method: 'vservices' | 'createVservice' | 'deleteVservice', params: Record<string, unknown>): unknown {
    if (method === 'vservices') return this.list();
    if (method === 'deleteVservice') {
      const r = this.delete(params);
      this.deps.log?.info({ vservice: r.name }, 'virtual service deleted');
      return r;
    }
    const r = this.create(params);
    this.deps.log?.info({ vservice: r.name, ip: r.ip, port: r.port, backends: r.backends, lb: r.lb, tags: r.tags, replaced: r.replaced }, r.replaced ? 'virtual service replaced' : 'virtual service created');
    return r;
  }

  list(): VserviceView[] {
    return this.deps.sync.list().map(viewOf);
  }

  /** createVservice {name, ip, port, backends, lb?, tags?} (types checked by the control server already). */
  create(p: Record<string, unknown>): VserviceView & { replaced: boolean } {
    const { ranges, directory, table } = this.deps;
    const name = p.name as string;
    const nameErr = badVserviceName(name);
    if (nameErr) throw bad(nameErr);
    const ipText = p.ip as string;
    if (!ipaddr.isValid(ipText)) throw bad(`ip "${ipText}" is not an IP address`);
    const vip = ipaddr.process(ipText).toString();
    const vipErr = badVip(vip, ranges);
    if (vipErr) throw bad(vipErr);
    const port = p.port as number;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`port ${port} is not an integer 1-65535`);
    const list = p.backends as string[];
    if (list.length < 1 || list.length > MAX_BACKENDS) throw bad(`backends: give 1 to ${MAX_BACKENDS} (got ${list.length})`);
    const backends: Endpoint[] = [];
    const seen = new Set<string>();
    for (const s of list) {
      const ep = parseBackend(s);
      if (typeof ep === 'string') throw bad(ep);
      const why = badBackendAddress(ep.ip, ranges);
      if (why) throw bad(`backend ${formatBackend(ep)} is ${why}; a backend is a real unicast address`);
      const door = this.deps.door(ep.ip, ep.port);
      if (door) throw bad(`backend ${formatBackend(ep)} is an appswitch daemon's ${door === 'pool' ? 'port pool' : `${door} port`} on a member: not a backend`);
      if (seen.has(formatBackend(ep))) throw bad(`backend ${formatBackend(ep)} is listed twice`);
      seen.add(formatBackend(ep));
      backends.push(ep);
    }
    let lb: LbStrategy | undefined;
    if (p.lb !== undefined) {
      if (!LB_STRATEGIES.includes(p.lb as LbStrategy)) throw bad(`lb "${String(p.lb)}" is not one of ${LB_STRATEGIES.join(', ')}`);
      lb = p.lb as LbStrategy;
    }
    let tags: Record<string, string> = {};
    try {
      tags = parseTags((p.tags as string[] | undefined) ?? []);
    } catch (e) {
      throw bad((e as Error).message);
    }
    /* clashes with what exists */
    if (directory.vipsOf(name).length) throw new ControlCallError('ERR_CONFLICT', `name ${name} is the name of an app`);
    if (directory.all().some((a) => a.identity === vip)) throw new ControlCallError('ERR_CONFLICT', `ip ${vip} is the identity of an app`);
    const mine = vserviceAppId(name);
    const other = table.lookup({ vip, port, proto: 'tcp' }).find((e) => e.appId !== mine);
    if (other) {
      const who = other.node === VSERVICE_NODE ? `virtual service ${other.name ?? other.appId}` : `app ${other.name ?? other.appId} on node ${other.node}`;
      throw new ControlCallError('ERR_CONFLICT', `${vip}:${port} is already served by ${who}`);
    }
    const body: VserviceBody = { vip, port, proto: 'tcp', backends, tags };
    if (lb) body.lb = lb;
    const replaced = this.deps.objects.get(VSERVICE_KIND, name) !== undefined;
    try {
      this.deps.objects.put(VSERVICE_KIND, name, body);
    } catch (e) {
      if (e instanceof AppswitchError) throw new ControlCallError(e.code === 'ERR_BAD_ARGUMENT' ? 'ERR_BAD_PARAMS' : 'ERR_CONFLICT', e.message);
      throw e;
    }
    const v = this.deps.sync.get(name);
    if (!v) throw new Error(`virtual service ${name} was stored but is not served`);
    return { ...viewOf(v), replaced };
  }

  /** deleteVservice {name}. */
  delete(p: Record<string, unknown>): { name: string; deleted: true } {
    const name = p.name as string;
    const nameErr = badVserviceName(name);
    if (nameErr) throw bad(nameErr);
    if (!this.deps.objects.delete(VSERVICE_KIND, name)) throw new ControlCallError('ERR_NOT_FOUND', `no virtual service named ${name}`);
    return { name, deleted: true };
  }
}

/** Wires virtual services into a daemon: the 'vservice' validator of the cluster-object store, the service-table
 * entries (VserviceSync; re-checked when the apps or the doors change), the vips apps may not take, and the control
 * calls. */
export function setUpVservices(d: {
  objects: ClusterObjects;
  table: ServiceTable;
  directory: AppDirectory;
  doors: Pick<DaemonPortGuard, 'check'>;
  ranges: VirtualRanges;
  log: Logger;
}): { sync: VserviceSync; control: VserviceControl } {
  d.objects.register(VSERVICE_KIND, vserviceValidator(d.ranges));
  let identities: Set<string> | undefined; /* the apps' identities, rebuilt on the first look-up after a change */
  const sync = new VserviceSync({
    objects: d.objects,
    table: d.table,
    door: (ep) => d.doors.check(ep.ip, ep.port, 'tcp'),
    appHolds: (ip) => (identities ??= new Set(d.directory.all().map((a) => a.identity))).has(ip),
    log: d.log,
  });
  const appsChanged = (): void => {
    identities = undefined;
    sync.refresh();
  };
  d.directory.on('added', appsChanged);
  d.directory.on('removed', appsChanged);
  d.directory.reservedBy = (ip) => {
    const n = sync.nameOf(ip);
    return n === undefined ? undefined : `virtual service ${n}`;
  };
  const control = new VserviceControl({ objects: d.objects, sync, table: d.table, directory: d.directory, ranges: d.ranges, door: (ip, port) => d.doors.check(ip, port, 'tcp'), log: d.log });
  return { sync, control };
}
