/** Virtual services: a vip (and a DNS name) in front of servers that do not run under appswitch. One is a cluster
 * object of kind 'vservice' (table/cluster-objects.ts) named by its DNS name, whose body is VserviceBody. This file
 * is its shape and the checks every copy passes (a control call, a copy from gossip, the saved file), and the text
 * form of a backend (`ADDR:PORT`, `[v6]:PORT`). Pure: no I/O. */
import ipaddr from 'ipaddr.js';
import { rangeEdge, type VirtualRanges } from '../table/addresses.js';
import { LB_STRATEGIES, type LbStrategy } from '../table/balancer.js';
import type { Endpoint } from '../table/endpoint.js';
import { isValidName, parseTags } from '../trap/apps.js';

/** The cluster-object kind. */
export const VSERVICE_KIND = 'vservice';
export { VSERVICE_NODE } from '../table/service-table.js';
/** Backends per virtual service. */
export const MAX_BACKENDS = 64;
/** Longest name (the gossip key `@obj/vservice/<name>` must fit the store's key cap). */
export const MAX_VSERVICE_NAME = 200;

export interface VserviceBody {
  vip: string;
  port: number;
  proto: 'tcp';
  backends: Endpoint[];
  lb?: LbStrategy;
  tags: Record<string, string>;
}

/** The app id that the service-table entries of virtual service `name` carry. */
export function vserviceAppId(name: string): string {
  return `vservice:${name}`;
}

/** Why a name cannot name a virtual service (undefined: it can). */
export function badVserviceName(name: unknown): string | undefined {
  if (typeof name !== 'string' || !isValidName(name) || name.length > MAX_VSERVICE_NAME || name !== name.toLowerCase()) {
    return `name ${JSON.stringify(name)} is not a valid DNS name (lower case letters, digits, '-', '.'; at most ${MAX_VSERVICE_NAME} characters)`;
  }
  return undefined;
}

/** Why `ip` cannot be a backend address (undefined: it can): it must be a real unicast address. */
export function badBackendAddress(ip: string, ranges: Pick<VirtualRanges, 'contains'>): string | undefined {
  const a = ipaddr.parse(ip);
  const range = a.range();
  if (range === 'loopback') return 'a loopback address';
  if (range === 'unspecified') return 'the unspecified address';
  if (range === 'linkLocal') return 'a link-local address';
  if (range === 'multicast') return 'a multicast address';
  if (range === 'broadcast') return 'the broadcast address';
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) return 'an IPv4-mapped address (give the IPv4 address)';
  if (ranges.contains(ip)) return 'a virtual address (inside --vip-cidr or the identity range): vips are names, never destinations';
  return undefined;
}

/** Parses `ADDR:PORT` or `[IPV6]:PORT` into a canonical endpoint; a string says what is wrong. */
export function parseBackend(s: string): Endpoint | string {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return `backend "${s}" is not ADDR:PORT (an IPv6 address as [ADDR]:PORT)`;
  const host = m[1] as string;
  const port = Number(m[2]);
  if (!ipaddr.isValid(host) || (m[0].startsWith('[') ? !ipaddr.IPv6.isValid(host) : !ipaddr.IPv4.isValidFourPartDecimal(host))) {
    return `backend "${s}": ${host} is not an IP address`;
  }
  if (port < 1 || port > 65535) return `backend "${s}": port ${port} is not 1-65535`;
  return { ip: ipaddr.parse(host).toString(), port };
}

/** The text form of a backend. */
export function formatBackend(e: Endpoint): string {
  return e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
}

/** Why `vip` cannot be a virtual service's address (undefined: it can): inside --vip-cidr, not an edge of it. */
export function badVip(vip: string, ranges: Pick<VirtualRanges, 'isVip' | 'cidrs'>): string | undefined {
  if (!ranges.isVip(vip)) return `ip ${vip} is outside the virtual ranges (${ranges.cidrs.join(', ')}); see appswitch daemon --vip-cidr`;
  const edge = rangeEdge(ranges.cidrs, vip);
  if (edge) return `ip ${vip} is the ${edge.kind} address of the virtual range ${edge.cidr}`;
  return undefined;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;

/** The validator of kind 'vservice' (ClusterObjects): the body, canonical, or why it is refused. It checks what every
 * node can check by itself (shape, a vip inside this node's ranges, real unicast backends); clashes with apps and
 * other virtual services are checked where the object is made (the control call). */
export function vserviceValidator(ranges: VirtualRanges): (body: unknown) => VserviceBody | string {
  return (body) => {
    if (!isObj(body)) return 'vservice body is not an object';
    for (const k of Object.keys(body)) if (!['vip', 'port', 'proto', 'backends', 'lb', 'tags'].includes(k)) return `vservice body: unknown field ${k}`;
    if (typeof body.vip !== 'string' || !ipaddr.isValid(body.vip)) return 'vservice body: vip is not an IP address';
    const vip = ipaddr.process(body.vip).toString();
    const bv = badVip(vip, ranges);
    if (bv) return bv;
    if (!isPort(body.port)) return 'vservice body: bad port';
    if (body.proto !== 'tcp') return 'vservice body: proto must be tcp';
    if (!Array.isArray(body.backends) || body.backends.length < 1 || body.backends.length > MAX_BACKENDS) return `vservice body: 1-${MAX_BACKENDS} backends`;
    const backends: Endpoint[] = [];
    const seen = new Set<string>();
    for (const b of body.backends as unknown[]) {
      if (!isObj(b) || typeof b.ip !== 'string' || !ipaddr.isValid(b.ip) || !isPort(b.port)) return 'vservice body: bad backend';
      const ip = ipaddr.parse(b.ip).toString();
      const bad = badBackendAddress(ip, ranges);
      if (bad) return `backend ${formatBackend({ ip, port: b.port })} is ${bad}`;
      const e = { ip, port: b.port };
      if (seen.has(formatBackend(e))) return `backend ${formatBackend(e)} is listed twice`;
      seen.add(formatBackend(e));
      backends.push(e);
    }
    if (body.lb !== undefined && !LB_STRATEGIES.includes(body.lb as LbStrategy)) return `vservice body: lb must be one of ${LB_STRATEGIES.join(', ')}`;
    if (!isObj(body.tags)) return 'vservice body: tags must be an object';
    let tags: Record<string, string>;
    try {
      tags = parseTags(Object.entries(body.tags).map(([k, v]) => `${k}=${typeof v === 'string' ? v : '\u0000'}`));
    } catch (e) {
      return `vservice body: ${(e as Error).message}`;
    }
    const out: VserviceBody = { vip, port: body.port, proto: 'tcp', backends, tags };
    if (body.lb !== undefined) out.lb = body.lb as LbStrategy;
    return out;
  };
}
