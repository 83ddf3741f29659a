/** The records each node publishes in its gossip store, decoded and validated once, at the boundary, before they
 * touch the service table or the app directory:
 *   `@node`        {ports:{low,high}, gossipPort, peerPort, dnsPort, metricsPort?, uiPort?, egressGateway?, egressPort?, gateway?}:
 *                  the node's port pool and daemon ports, its egress and ingress gateway flags
 *   `@app/<id>`    an app of the node (identity, vip?, name, tags, expose?: [{port, hostPort}], exposedAt?)
 *   `<node>/...`   a service entry of the node (vip:port/proto -> endpoint)
 *   `@obj/<kind>/<name>` the node's copy of a cluster object (any node's, see table/cluster-objects.ts)
 * A node is trusted only with what is its own: a service entry's endpoint must be the publishing node's gossip
 * address and a port of its pool, and never a loopback, unspecified, link-local, multicast or virtual address. Pure:
 * no I/O. */
import ipaddr from 'ipaddr.js';
import { decodeExposeList } from '../gateway/exposures.js';
import { IDENTITY_CIDR, type VirtualRanges } from '../table/addresses.js';
import { badObjectKey, type ClusterObject } from '../table/cluster-objects.js';
import type { AppEntry } from '../table/directory.js';
import type { ServiceEntry } from '../table/service-table.js';

/** Key of the per-node record in the gossip store. */
export const NODE_KEY = '@node';
/** Prefix of app records in the gossip store. */
export const APP_PREFIX = '@app/';

/** What a node tells the cluster about itself: its port pool and the ports its daemon listens on (node address). */
export interface NodeRecord {
  ports: { low: number; high: number };
  gossipPort: number;
  peerPort: number;
  dnsPort: number;
  metricsPort?: number;
  /** The live view's port (`--ui-address` with `--ui-allow-remote`), when it listens on a non-loopback address. */
  uiPort?: number;
  /** Started with `appswitch daemon --gateway`: it listens for exposures (see gateway/ingress.ts). */
  gateway?: boolean;
  /** The node carries other nodes' egress (`--egress-gateway`), through its egress proxy at address:egressPort. */
  egressGateway?: boolean;
  /** Where the node's egress proxy listens (`--egress-port`), on an egress gateway. */
  egressPort?: number;
}

/** The outcome of validating a record: accepted, rejected (with why), or waiting for what it is checked against. */
export type Checked<T> = { ok: true; value: T } | { ok: false; wait: boolean; reason: string };

const reject = <T>(reason: string): Checked<T> => ({ ok: false, wait: false, reason });
const wait = <T>(reason: string): Checked<T> => ({ ok: false, wait: true, reason });

function str(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length < 300;
}
function port(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536;
}
function json(value: Uint8Array): Record<string, unknown> | undefined {
  try {
    const o = JSON.parse(Buffer.from(value).toString('utf8')) as unknown;
    return typeof o === 'object' && o !== null && !Array.isArray(o) ? (o as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
function tagsOf(v: unknown): Record<string, string> {
  const tags: Record<string, string> = {};
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (typeof x === 'string' && k.length < 300 && x.length < 300) tags[k] = x;
  }
  return tags;
}

/** The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), or undefined when s is not one. */
export function canonicalIp(s: string): string | undefined {
  if (!ipaddr.isValid(s)) return undefined;
  return ipaddr.process(s).toString();
}

/** Why `ip` can never be a real endpoint published by another node (undefined: it may be). */
export function forbiddenEndpoint(ip: string, ranges: VirtualRanges): string | undefined {
  const c = canonicalIp(ip);
  if (c === undefined) return 'not an IP address';
  const range = ipaddr.parse(c).range();
  if (range === 'loopback') return 'loopback address';
  if (range === 'unspecified') return 'unspecified address';
  if (range === 'linkLocal') return 'link-local address';
  if (range === 'multicast') return 'multicast address';
  if (range === 'broadcast') return 'broadcast address';
  if (ranges.contains(c)) return 'virtual address (inside --vip-cidr or the identity range)';
  return undefined;
}

/** Decodes a `@node` record. */
export function decodeNodeRecord(value: Uint8Array): Checked<NodeRecord> {
  const o = json(value);
  if (!o) return reject('node record is not a JSON object');
  const p = o.ports as Record<string, unknown> | undefined;
  if (!p || typeof p !== 'object' || !port(p.low) || !port(p.high) || p.low > p.high) return reject('node record: bad port pool');
  if (!port(o.gossipPort) || !port(o.peerPort) || !port(o.dnsPort)) return reject('node record: bad daemon port');
  if (o.metricsPort !== undefined && !port(o.metricsPort)) return reject('node record: bad metrics port');
  const r: NodeRecord = { ports: { low: p.low, high: p.high }, gossipPort: o.gossipPort, peerPort: o.peerPort, dnsPort: o.dnsPort };
  if (o.metricsPort !== undefined) r.metricsPort = o.metricsPort;
  if (o.uiPort !== undefined && !port(o.uiPort)) return reject('node record: bad ui port');
  if (o.uiPort !== undefined) r.uiPort = o.uiPort;
  if (o.gateway !== undefined && typeof o.gateway !== 'boolean') return reject('node record: bad gateway flag');
  if (o.gateway === true) r.gateway = true;
  if (o.egressGateway !== undefined && typeof o.egressGateway !== 'boolean') return reject('node record: bad egressGateway');
  if (o.egressPort !== undefined && !port(o.egressPort)) return reject('node record: bad egress port');
  if (o.egressGateway === true && o.egressPort === undefined) return reject('node record: an egress gateway without an egress port');
  if (o.egressGateway === true) r.egressGateway = true;
  if (o.egressPort !== undefined) r.egressPort = o.egressPort;
  return { ok: true, value: r };
}

/** What a node's records are checked against. */
export interface NodeContext {
  /** The publishing node's gossip address (IP only, canonical); undefined while it is not a known member. */
  address: string | undefined;
  /** Its `@node` record, once received. */
  record: NodeRecord | undefined;
  /** This node's virtual ranges (--vip-cidr and the identity range). */
  ranges: VirtualRanges;
}

/** Validates a service entry that came from `node`: shape, id (`<node>/...`, equal to the key), a vip inside our
 * virtual ranges, and an endpoint that is the node's own address and a port of its pool. An entry whose node has
 * no address or record yet waits (it is checked again when they arrive). */
export function decodeRemoteEntry(node: string, key: string, value: Uint8Array, ctx: NodeContext): Checked<ServiceEntry> {
  const o = json(value);
  if (!o) return reject('not a JSON object');
  const ep = o.endpoint as Record<string, unknown> | undefined;
  if (!str(o.vip) || !port(o.port) || (o.proto !== 'tcp' && o.proto !== 'udp') || !str(o.appId)) return reject('malformed entry');
  if (!ep || typeof ep !== 'object' || !str(ep.ip) || !port(ep.port) || typeof o.version !== 'number') return reject('malformed entry');
  if (key !== o.id || !key.startsWith(`${node}/`)) return reject('entry id is not a key of its node');
  const vip = canonicalIp(o.vip);
  if (vip === undefined || !ctx.ranges.contains(vip)) return reject(`vip ${o.vip} is outside this node's virtual ranges`);
  const ip = canonicalIp(ep.ip);
  const bad = forbiddenEndpoint(ep.ip, ctx.ranges);
  if (ip === undefined || bad !== undefined) return reject(`endpoint ${ep.ip}: ${bad ?? 'not an IP address'}`);
  if (ctx.address === undefined) return wait('node is not a known member yet');
  if (ip !== ctx.address) return reject(`endpoint ${ip} is not the address of node ${node} (${ctx.address})`);
  if (ctx.record === undefined) return wait('no @node record of the node yet');
  const r = ctx.record;
  if (ep.port < r.ports.low || ep.port > r.ports.high) return reject(`endpoint port ${ep.port} is outside the node's pool ${r.ports.low}-${r.ports.high}`);
  if ([r.gossipPort, r.peerPort, r.dnsPort, r.metricsPort, r.egressPort, r.uiPort].includes(ep.port)) return reject(`endpoint port ${ep.port} is a daemon port`);
  const e: ServiceEntry = {
    id: key,
    vip,
    port: o.port,
    proto: o.proto,
    node,
    endpoint: { ip, port: ep.port },
    appId: o.appId,
    tags: tagsOf(o.tags),
    version: o.version,
  };
  if (str(o.name)) e.name = o.name;
  if (o.lb === 'random' || o.lb === 'round-robin' || o.lb === 'least-conn' || o.lb === 'p2c') e.lb = o.lb;
  if (o.family === 4 || o.family === 6) e.family = o.family;
  return { ok: true, value: e };
}

const IDENTITY = ipaddr.parseCIDR(IDENTITY_CIDR);

/** Validates an app record that came from `node`: shape, key `@app/<id>`, and an identity that is a vip (inside
 * --vip-cidr) or a link-local identity (169.254/16, never the metadata address); a link-local identity that an app
 * of this node holds may not be claimed (identities are unique in the cluster: a duplicate is an impersonation).
 * Vips may be shared: instances of one distributed app on several nodes hold the same vip. */
export function decodeRemoteApp(node: string, key: string, value: Uint8Array, ranges: VirtualRanges, localIdentity: (ip: string) => boolean): Checked<AppEntry> {
  const o = json(value);
  if (!o || !str(o.id) || key !== APP_PREFIX + o.id || !str(o.identity) || typeof o.vip !== 'boolean') return reject('malformed app record');
  const identity = canonicalIp(o.identity);
  if (identity === undefined) return reject('app identity is not an IP address');
  if (o.vip) {
    if (!ranges.isVip(identity)) return reject(`app vip ${identity} is outside --vip-cidr`);
  } else {
    const a = ipaddr.parse(identity);
    if (a.kind() !== 'ipv4' || !a.match(IDENTITY) || identity === '169.254.169.254') return reject(`app identity ${identity} is not a link-local identity`);
    if (localIdentity(identity)) return reject(`app identity ${identity} is held by an app of this node`);
  }
  const e: AppEntry = { id: o.id, node, identity, vip: o.vip, tags: tagsOf(o.tags) };
  if (str(o.name)) e.name = o.name;
  if (o.expose !== undefined) {
    const x = decodeExposeList(o.expose);
    if (typeof x === 'string') return reject(`app record: ${x}`);
    if (typeof o.exposedAt !== 'number' || !Number.isFinite(o.exposedAt)) return reject('app record: expose without exposedAt');
    if (x.length) Object.assign(e, { expose: x, exposedAt: o.exposedAt });
  }
  return { ok: true, value: e };
}

/** Prefix of cluster-object records (`@obj/<kind>/<name>`): every node publishes its copy of every object and
 * tombstone (table/cluster-objects.ts), so an object outlives the node that made it. */
export const OBJ_PREFIX = '@obj/';

/** The gossip key of a cluster object. */
export function objectKey(o: Pick<ClusterObject, 'kind' | 'name'>): string {
  return `${OBJ_PREFIX}${o.kind}/${o.name}`;
}

/** Decodes a `@obj/<kind>/<name>` record into a ClusterObject whose kind and name match its key; the body is checked
 * later, by the kind's validator (ClusterObjects.merge). */
export function decodeObjectRecord(key: string, value: Uint8Array): Checked<ClusterObject> {
  const o = json(value);
  if (!o) return reject('object record is not a JSON object');
  const bad = badObjectKey(o.kind, o.name);
  if (bad) return reject(`object record: ${bad}`);
  if (key !== objectKey({ kind: o.kind as string, name: o.name as string })) return reject('object record: kind/name do not match the key');
  if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version) || o.version <= 0) return reject('object record: bad version');
  if (!str(o.origin)) return reject('object record: bad origin');
  if (o.deleted !== undefined && o.deleted !== true) return reject('object record: bad deleted flag');
  const r: ClusterObject = { kind: o.kind as string, name: o.name as string, version: o.version, origin: o.origin, body: o.body ?? null };
  if (o.deleted) r.deleted = true;
  return { ok: true, value: r };
}
