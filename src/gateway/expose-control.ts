/** The control calls `expose` {vip, port, hostPort?} and `unexpose` {vip, port}: every field validated (the control
 * server already checked types, the privilege and the required ones), then an 'exposure' cluster object written or
 * deleted (named VIP:PORT, so exposing a service again moves it to the new host port). */
import type { Logger } from 'pino';
import ipaddr from 'ipaddr.js';
import { ControlCallError, type ExposeResult } from '../daemon/control-protocol.js';
import type { VirtualRanges } from '../table/addresses.js';
import { exposureName, type ExposureClaim } from './exposures.js';
import type { Ingress } from './ingress.js';

/** The body of an 'exposure' cluster object. */
export interface ExposureBody {
  vip: string;
  port: number;
  hostPort: number;
  /** When it was exposed (ms since the epoch): the older exposure keeps a host port. */
  since: number;
}

/** The kind of exposure objects in the cluster-object store. */
export const EXPOSURE_KIND = 'exposure';

/** Validates an 'exposure' object body (from the store, so from any node): the body, or why it is refused. With
 * `name`, the object's name must be the body's VIP:PORT. */
export function decodeExposureBody(v: unknown, name?: string): ExposureBody | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'exposure: not an object';
  const o = v as Record<string, unknown>;
  const okPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
  if (typeof o.vip !== 'string' || !ipaddr.isValid(o.vip)) return 'exposure: vip is not an IP address';
  if (!okPort(o.port) || !okPort(o.hostPort)) return 'exposure: ports must be integers 1-65535';
  if (typeof o.since !== 'number' || !Number.isFinite(o.since)) return 'exposure: since must be a time';
  const vip = ipaddr.process(o.vip).toString();
  if (name !== undefined && name !== exposureName(vip, o.port)) return `exposure: name ${name} is not ${exposureName(vip, o.port)}`;
  for (const k of Object.keys(o)) if (!['vip', 'port', 'hostPort', 'since'].includes(k)) return `exposure: unknown field ${k}`;
  return { vip, port: o.port, hostPort: o.hostPort, since: o.since };
}

/** The claims of the exposure objects (each checked again, its name included), for Ingress.setObjectClaims. */
export function objectClaims(objects: Array<{ name: string; body: unknown }>): ExposureClaim[] {
  const out: ExposureClaim[] = [];
  for (const { name, body } of objects) {
    const b = decodeExposureBody(body, name);
    if (typeof b !== 'string') out.push({ vip: b.vip, port: b.port, hostPort: b.hostPort, source: 'api', origin: name, since: b.since });
  }
  return out;
}

/** The exposure objects of a cluster-object store as an ExposureStore. */
export function exposureStore(objects: {
  put(kind: string, name: string, body: unknown): unknown;
  delete(kind: string, name: string): unknown;
  get(kind: string, name: string): { body: unknown } | undefined;
}): ExposureStore {
  return {
    put: (name, body) => void objects.put(EXPOSURE_KIND, name, body),
    delete: (name) => objects.delete(EXPOSURE_KIND, name) !== undefined,
    get: (name) => {
      const b = objects.get(EXPOSURE_KIND, name)?.body;
      const d = b === undefined ? undefined : decodeExposureBody(b, name);
      return typeof d === 'object' ? d : undefined;
    },
  };
}

/** Where exposure objects live: the cluster-object store (table/cluster-objects.ts), kind 'exposure'. */
export interface ExposureStore {
  put(name: string, body: ExposureBody): void;
  delete(name: string): boolean;
  get(name: string): ExposureBody | undefined;
}

export interface ExposureControlDeps {
  ingress: Ingress;
  ranges: Pick<VirtualRanges, 'isVip' | 'cidrs'>;
  log: Logger;
  /** Absent until the cluster-object store is wired: then expose/unexpose answer ERR_INTERNAL. */
  store?: ExposureStore;
}

const NO_GATEWAY = 'no gateway node: reachable once a node runs with --gateway';

function portParam(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new ControlCallError('ERR_BAD_PARAMS', `${what} must be an integer 1-65535`);
  return v;
}

export class ExposureControl {
  constructor(private readonly deps: ExposureControlDeps) {}

  set store(s: ExposureStore) {
    this.deps.store = s;
  }

  private vipParam(v: unknown): string {
    if (typeof v !== 'string' || !ipaddr.isValid(v)) throw new ControlCallError('ERR_BAD_PARAMS', `vip ${String(v).slice(0, 64)} is not an IP address`);
    const vip = ipaddr.process(v).toString();
    if (!this.deps.ranges.isVip(vip)) throw new ControlCallError('ERR_BAD_PARAMS', `vip ${vip} is outside the virtual ranges (${this.deps.ranges.cidrs.join(', ')})`);
    return vip;
  }

  private need(): ExposureStore {
    if (!this.deps.store) throw new ControlCallError('ERR_INTERNAL', 'exposures through the control API need the cluster-object store, which this daemon lacks');
    return this.deps.store;
  }

  handle(method: 'expose' | 'unexpose', params: Record<string, unknown>): ExposeResult {
    const vip = this.vipParam(params.vip);
    const port = portParam(params.port, 'port');
    const name = exposureName(vip, port);
    const { ingress, log } = this.deps;
    if (method === 'unexpose') {
      const store = this.need();
      if (!store.delete(name)) {
        const byApp = ingress.list().some((e) => e.vip === vip && e.port === port);
        throw new ControlCallError('ERR_NOT_FOUND', byApp ? `${name} is exposed by its app's run --expose: it ends with the app` : `${name} is not exposed`);
      }
      ingress.refresh();
      log.info({ exposure: name }, 'exposure removed (appswitch unexpose)');
      return { exposure: null };
    }
    const hostPort = params.hostPort === undefined ? port : portParam(params.hostPort, 'hostPort');
    const bad = ingress.hostPortProblem(hostPort);
    if (bad) throw new ControlCallError('ERR_CONFLICT', bad);
    const holder = ingress.holderOf(hostPort);
    if (holder && (holder.vip !== vip || holder.port !== port)) {
      throw new ControlCallError('ERR_CONFLICT', `host port ${hostPort} is held by the exposure of ${exposureName(holder.vip, holder.port)}`);
    }
    const store = this.need();
    const had = store.get(name);
    store.put(name, { vip, port, hostPort, since: had && had.hostPort === hostPort ? had.since : Date.now() });
    ingress.refresh();
    log.info({ exposure: name, hostPort }, 'service exposed (appswitch expose)');
    const row = ingress.list().find((e) => e.vip === vip && e.port === port && e.hostPort === hostPort) ?? null;
    const r: ExposeResult = { exposure: row };
    if (!ingress.liveGateways().length) r.warning = NO_GATEWAY;
    return r;
  }
}
