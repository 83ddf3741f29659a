/** The decision table the generators decide connects from (format and design: native/dtab.h). The daemon stays the
 * authority: this module compiles its service table, its policy (one bit per local app and instance, decided by the
 * daemon's own Policy object, so any rule it holds is what the generators apply), the apps of this host, member
 * health and the fast-path settings into one body, and publishes it into a memfd every generator maps. A change
 * (a service up or down, an app started or gone, a node dead or back) is published within one turn of the event loop;
  * a safety republish runs every 5 s for what has no event. */
import ipaddr from 'ipaddr.js';
import type { Policy } from '../policy/policy.js';
import { IDENTITY_CIDR } from '../table/addresses.js';
import type { LbStrategy } from '../table/balancer.js';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';
import { VSERVICE_NODE } from '../table/service-table.js';
import type { AppRecord } from './apps.js';

/* layout constants: keep in sync with native/dtab.h (test/unit/decision-table.test.ts checks them against the C side) */
export const DT = {
  head: 64,
  range: 20,
  svc: 32,
  inst: 48,
  app: 104,
  idMax: 32,
  sockMax: 48,
  slots: 4096,
  fastpath: 1,
  alive: 1,
  local: 2,
  fast: 4,
  external: 8,
  appFast: 1,
  /** struct as_dt_ingress, struct as_dt_steered, AS_DT_INGRESS_KEYS, and the head's off_ingress */
  ingress: 96,
  steered: 8,
  ingressKeys: 4,
  keyLen: 16,
  offIngress: 56,
} as const;

const LB_CODE: Record<LbStrategy, number> = { random: 0, 'round-robin': 1, 'least-conn': 2, p2c: 3 };

export interface DecisionInputs {
  nodeName: string;
  nodeAddress: string;
  /** --vip-cidr ranges (the identity range is added here). */
  vipCidrs: readonly string[];
  table: ServiceTable;
  apps: () => Iterable<AppRecord>;
  policy: Policy;
  nodeAlive: (node: string) => boolean;
  fastpath: boolean;
  lb: LbStrategy;
  /** What a server's generator needs to answer outside clients' accepts by itself (native/dtab.h, ingress); absent or
   * undefined: no ingress section (every such accept asks the daemon). */
  ingress?: () => IngressPublish | undefined;
}

/** The ingress section of a publication (native/dtab.h struct as_dt_ingress). */
export interface IngressPublish {
  /** Preamble MAC keys, DT.keyLen bytes each, at most DT.ingressKeys (relays sign with the first). */
  keys: Buffer[];
  /** Addresses of the live gateway nodes (this node's when it is one). */
  gateways: string[];
  /** Host ports steered (sk_lookup) to an app of this host, while this node is a gateway and the exposure holding the
   * port is the steered service's. An entry whose app is not in the publication's apps is left out. */
  steered: Array<{ hostPort: number; appId: string }>;
  /** Every address of this host. */
  local: string[];
}

const ip16Memo = new Map<string, Buffer>();

/** 16 bytes, IPv4 as ::ffff:a.b.c.d (remembered: a table names the same addresses publication after publication). */
export function ip16(ip: string): Buffer {
  let b = ip16Memo.get(ip);
  if (b) return b;
  const a = ipaddr.parse(ip);
  b = Buffer.from(a.kind() === 'ipv4' ? (a as ipaddr.IPv4).toIPv4MappedAddress().toByteArray() : a.toByteArray());
  if (ip16Memo.size >= 65536) ip16Memo.clear();
  ip16Memo.set(ip, b);
  return b;
}

function fnv(buf: Buffer, h = 2166136261): number {
  for (const b of buf) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h >>> 0;
}

/** The service bucket hash (native/dtab.c svc_hash). */
export function svcHash(vip: Buffer, port: number): number {
  return fnv(Buffer.from([port & 0xff, port >> 8]), fnv(vip));
}

function slotOf(s: string): number {
  return fnv(Buffer.from(s)) % DT.slots;
}

/** The in-flight counter slot of a real endpoint "ip:port" (shared with the daemon's measurement). */
export function endpointSlot(key: string): number {
  return slotOf(`ep/${key}`);
}

/** Compiles the inputs into a table body (pure: exported for tests). */
export function compileDecisions(inp: DecisionInputs): Buffer {
  const ranges: Array<{ ip: Buffer; bits: number }> = [];
  for (const c of [...inp.vipCidrs, IDENTITY_CIDR]) {
    const [net, bits] = ipaddr.parseCIDR(c);
    ranges.push({ ip: ip16(net.toString()), bits: net.kind() === 'ipv4' ? 96 + bits : bits });
  }
  const byKey = new Map<string, ServiceEntry[]>();
  for (const e of inp.table.all()) {
    if (e.proto !== 'tcp') continue;
    const k = `${e.vip}/${e.port}`;
    const l = byKey.get(k);
    if (l) l.push(e);
    else byKey.set(k, [e]);
  }
  const apps = [...inp.apps()];
  const appIndex = new Map(apps.map((a, i) => [a.id, i]));
  const insts: ServiceEntry[] = [];
  const svcs: Array<{ vip: Buffer; port: number; first: number; count: number; lb: number; slot: number }> = [];
  for (const [k, list] of byKey) {
    const first = insts.length;
    insts.push(...list);
    const e0 = list[0] as ServiceEntry;
    svcs.push({ vip: ip16(e0.vip), port: e0.port, first, count: list.length, lb: LB_CODE[e0.lb ?? inp.lb], slot: slotOf(`svc/${k}`) });
  }
  let nb = 8;
  while (nb < svcs.length * 2) nb *= 2;
  const words = Math.max(1, Math.ceil(insts.length / 64));

  const offRanges = DT.head;
  const offSvc = offRanges + ranges.length * DT.range;
  const offInst = offSvc + nb * DT.svc;
  const offApps = offInst + insts.length * DT.inst;
  const offBits = offApps + apps.length * DT.app;
  const len = offBits + apps.length * words * 8;
  const b = Buffer.alloc(len);

  b.writeUInt32LE(inp.fastpath ? DT.fastpath : 0, 0);
  b.writeUInt32LE(ranges.length, 4);
  b.writeUInt32LE(offRanges, 8);
  b.writeUInt32LE(nb, 12);
  b.writeUInt32LE(offSvc, 16);
  b.writeUInt32LE(insts.length, 20);
  b.writeUInt32LE(offInst, 24);
  b.writeUInt32LE(apps.length, 28);
  b.writeUInt32LE(offApps, 32);
  b.writeUInt32LE(words, 36);
  ip16(inp.nodeAddress).copy(b, 40);

  ranges.forEach((r, i) => {
    r.ip.copy(b, offRanges + i * DT.range);
    b.writeUInt8(r.bits, offRanges + i * DT.range + 16);
  });
  for (const s of svcs) {
    let i = svcHash(s.vip, s.port) & (nb - 1);
    while (b.readUInt8(offSvc + i * DT.svc + 18)) i = (i + 1) & (nb - 1);
    const o = offSvc + i * DT.svc;
    s.vip.copy(b, o);
    b.writeUInt16LE(s.port, o + 16);
    b.writeUInt8(1, o + 18);
    b.writeUInt8(s.lb, o + 19);
    b.writeUInt32LE(s.first, o + 20);
    b.writeUInt32LE(s.count, o + 24);
    b.writeUInt32LE(s.slot, o + 28);
  }
  insts.forEach((e, i) => {
    const o = offInst + i * DT.inst;
    ip16(e.endpoint.ip).copy(b, o);
    b.writeUInt16LE(e.endpoint.port, o + 16);
    b.writeUInt8(e.family ?? 0, o + 18);
    const external = e.node === VSERVICE_NODE; /* a virtual service's backend: always ALIVE, never LOCAL/FAST */
    const local = !external && e.node === inp.nodeName;
    const server = local ? appIndex.get(e.appId) : undefined;
    let flags = external || local || inp.nodeAlive(e.node) ? DT.alive : 0;
    if (external) flags |= DT.external;
    if (local) flags |= DT.local;
    if (server !== undefined && apps[server]?.fastpath !== false) flags |= DT.fast;
    b.writeUInt8(flags, o + 19);
    b.writeInt32LE(server ?? -1, o + 20);
    b.writeUInt32LE(fnv(Buffer.from(`own/${e.node}/${e.appId}`)), o + 24);
    b.writeUInt32LE(endpointSlot(`${e.endpoint.ip}:${e.endpoint.port}`), o + 28);
    ip16(e.vip).copy(b, o + 32);
  });
  /* The policy's bits. A decision depends only on the two parties' identities and tags (the Policy contract), and a
   * client's identity only matters where it is some instance's vip: apps alike in those share one row of bits, and
   * each row decides once per distinct server (vip, tags). */
  const tagKey = (t: Record<string, string>): string => JSON.stringify(Object.entries(t).sort());
  const serverKeys = new Map<string, number>();
  const vips = new Set<string>();
  const instKey = insts.map((e) => {
    vips.add(e.vip);
    const k = `${e.vip}|${tagKey(e.tags)}`;
    let n = serverKeys.get(k);
    if (n === undefined) serverKeys.set(k, (n = serverKeys.size));
    return n;
  });
  const firstOf: ServiceEntry[] = [];
  insts.forEach((e, k) => (firstOf[instKey[k] as number] ??= e));
  const rows = new Map<string, number>(); /* row key -> offset of its bits */
  apps.forEach((a, i) => {
    const o = offApps + i * DT.app;
    b.write(a.id.slice(0, DT.idMax - 1), o, 'latin1');
    ip16(a.identity).copy(b, o + 32);
    b.writeUInt32LE(a.fastpath === false ? 0 : DT.appFast, o + 48);
    if (a.offers) b.write(a.offers.slice(0, DT.sockMax - 1), o + 56, 'latin1');
    const rk = `${vips.has(a.identity) ? a.identity : ''}|${tagKey(a.tags)}`;
    let bits = rows.get(rk);
    if (bits === undefined) {
      bits = offBits + rows.size * words * 8;
      rows.set(rk, bits);
      const client = { appId: a.id, identity: a.identity, tags: a.tags };
      const allowed = firstOf.map((e) => inp.policy.decide(client, { appId: e.appId, identity: e.vip, tags: e.tags }).allow);
      for (let k = 0; k < insts.length; k++) {
        if (!allowed[instKey[k] as number]) continue;
        const w = bits + (k >> 3);
        b[w] = (b[w] as number) | (1 << (k & 7));
      }
    }
    b.writeUInt32LE(bits, o + 52);
  });
  const core = rows.size < apps.length ? b.subarray(0, offBits + rows.size * words * 8) : b;
  const ingress = inp.ingress?.();
  if (!ingress) return core;
  const offIngress = align4(core.length);
  core.writeUInt32LE(offIngress, DT.offIngress);
  return Buffer.concat([core, Buffer.alloc(offIngress - core.length), compileIngress(ingress, appIndex, offIngress)]);
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** 16-byte addresses, each once (an address that does not parse is a caller's bug: it throws). */
function addressList(list: readonly string[]): Buffer[] {
  const seen = new Map<string, Buffer>();
  for (const a of list) {
    const b = ip16(a);
    seen.set(b.toString('hex'), b);
  }
  return [...seen.values()];
}

/** The ingress section (struct as_dt_ingress, then its arrays, 4-byte aligned), placed at body offset `at`: its
 * offsets are from the body's start. */
function compileIngress(inp: IngressPublish, appIndex: ReadonlyMap<string, number>, at: number): Buffer {
  const keys = inp.keys.slice(0, DT.ingressKeys);
  for (const k of keys) if (k.length !== DT.keyLen) throw new RangeError(`a preamble key has ${k.length} bytes, not ${DT.keyLen}`);
  const gateways = addressList(inp.gateways);
  const local = addressList(inp.local);
  const steered = new Map<string, { port: number; app: number }>();
  for (const s of inp.steered) {
    if (!Number.isInteger(s.hostPort) || s.hostPort < 1 || s.hostPort > 65535) throw new RangeError(`bad steered host port ${s.hostPort}`);
    const app = appIndex.get(s.appId);
    if (app !== undefined) steered.set(`${s.hostPort}/${app}`, { port: s.hostPort, app }); /* not of this host (yet): its accepts ask */
  }
  const offGateways = DT.ingress;
  const offSteered = offGateways + gateways.length * 16;
  const offLocal = offSteered + steered.size * DT.steered;
  const b = Buffer.alloc(offLocal + local.length * 16);
  keys.forEach((k, i) => k.copy(b, i * DT.keyLen));
  b.writeUInt32LE(keys.length, 64);
  b.writeUInt32LE(gateways.length, 68);
  b.writeUInt32LE(at + offGateways, 72);
  b.writeUInt32LE(steered.size, 76);
  b.writeUInt32LE(at + offSteered, 80);
  b.writeUInt32LE(local.length, 84);
  b.writeUInt32LE(at + offLocal, 88);
  gateways.forEach((g, i) => g.copy(b, offGateways + i * 16));
  [...steered.values()].forEach((s, i) => {
    b.writeUInt16LE(s.port, offSteered + i * DT.steered);
    b.writeInt32LE(s.app, offSteered + i * DT.steered + 4);
  });
  local.forEach((a, i) => a.copy(b, offLocal + i * 16));
  return b;
}

export interface NativeTables {
  dtabCreate(): number;
  dtabPublish(fd: number, body: Buffer): number;
  hostShmCreate(): { fd: number; counters: Buffer };
  dup(fd: number): number;
}

/** Owns the memfds and republishes on change. */
export class DecisionTable {
  readonly tableFd: number;
  readonly shmFd: number;
  private readonly counters: Buffer;
  private scheduled = false;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  publishes = 0;
  lastBytes = 0;
  /** Set when the body no longer fits (generators then ask the daemon for every connect). */
  disabled = false;

  constructor(
    private readonly native: NativeTables,
    private readonly inputs: DecisionInputs,
    private readonly onError: (what: string, e: unknown) => void,
  ) {
    this.tableFd = native.dtabCreate();
    const shm = native.hostShmCreate();
    this.shmFd = shm.fd;
    this.counters = shm.counters;
    inputs.table.on('added', () => this.invalidate());
    inputs.table.on('removed', () => this.invalidate());
    this.publish();
    this.timer = setInterval(() => this.publish(), 5000);
    this.timer.unref();
  }

  /** Something the table depends on changed: publish at the end of this turn of the event loop (changes that come
   * together are published together). */
  invalidate(): void {
    this.dirty = true;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.dirty) this.publish();
    });
  }

  /** Publishes now what invalidate() would publish at the end of this turn: a listen() is answered only once the
   * generators can see its service (a program that listens and then connects, or tells its clients it is ready,
   * must find it). */
  flush(): void {
    if (this.dirty) this.publish();
  }

  publish(): void {
    this.dirty = false;
    try {
      const body = compileDecisions(this.inputs);
      this.lastBytes = body.length;
      this.native.dtabPublish(this.tableFd, body);
      this.publishes++;
      this.disabled = false;
    } catch (e) {
      this.disabled = true;
      this.onError('publishing the decision table', e);
    }
  }

  /** Fresh in-flight measurement (endpoint "ip:port" -> open connections), as Balancer.setInflight. */
  setInflight(counts: Map<string, number>): void {
    const fresh = new Uint32Array(DT.slots);
    for (const [k, v] of counts) fresh[endpointSlot(k)] = (fresh[endpointSlot(k)] ?? 0) + v;
    for (let i = 0; i < DT.slots; i++) this.counters.writeUInt32LE(fresh[i] as number, i * 4);
  }

  /** Descriptors for one HELLO reply (they are closed once sent). */
  fdsForHello(): number[] {
    return [this.native.dup(this.tableFd), this.native.dup(this.shmFd)];
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
