/** Exposures: which services outside clients may reach, at which host port of the gateway nodes. Two sources — an
 * app's `appswitch run --expose [HOSTPORT:]PORT` (carried on its `@app/` record: it travels with the service table and
 * ends with the app) and the cluster objects of kind 'exposure' (`appswitch expose VIP:PORT [--port HOSTPORT]`) — whose
 * union is keyed by host port: two services wanting one host port, the older one keeps it and the other is a
 * conflict. Every node computes the same answer from the same records. Pure: no I/O. */

/** One `--expose`: the app's port PORT, reached from outside at HOSTPORT (same as PORT when not given). */
export interface ExposeSpec {
  port: number;
  hostPort: number;
}

/** Most `--expose` flags one app may carry. */
export const MAX_EXPOSE_PER_APP = 32;

function portOf(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** Parses `[HOSTPORT:]PORT`. Throws RangeError naming the bad value. */
export function parseExpose(s: string): ExposeSpec {
  const parts = s.split(':');
  const port = parts.length <= 2 ? portOf(parts[parts.length - 1] as string) : undefined;
  const hostPort = parts.length === 2 ? portOf(parts[0] as string) : port;
  if (port === undefined || hostPort === undefined) throw new RangeError(`--expose ${s}: expected [HOSTPORT:]PORT, ports 1-65535`);
  return { port, hostPort };
}

/** Parses `VIP:PORT` ([v6]:PORT for IPv6) of `appswitch expose`; the address is checked by the daemon. */
export function parseVipPort(s: string): { vip: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const port = m ? portOf(m[2] as string) : undefined;
  if (!m || port === undefined) throw new RangeError(`${s}: expected VIP:PORT ([VIP]:PORT for IPv6)`);
  return { vip: m[1] as string, port };
}

/** Validates `expose` metadata from a HELLO or a gossip record (untrusted JSON): the specs, or an error text. */
export function decodeExposeList(v: unknown): ExposeSpec[] | string {
  if (!Array.isArray(v)) return 'expose must be an array';
  if (v.length > MAX_EXPOSE_PER_APP) return `at most ${MAX_EXPOSE_PER_APP} --expose per app`;
  const out: ExposeSpec[] = [];
  for (const x of v) {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) return 'expose: each item must be {port, hostPort}';
    const { port, hostPort } = x as Record<string, unknown>;
    const ok = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
    if (!ok(port) || !ok(hostPort)) return 'expose: ports must be integers 1-65535';
    if (out.some((o) => o.hostPort === hostPort && o.port !== port)) return `--expose: host port ${hostPort} given twice`;
    if (!out.some((o) => o.hostPort === hostPort)) out.push({ port, hostPort });
  }
  return out;
}

/** The ports of a node that a host port may not be: its pool and its daemon's ports. */
export interface ReservedPorts {
  pool: { low: number; high: number };
  /** gossip, peer API, DNS, metrics (when served). */
  daemon: number[];
}

/** Why `hostPort` cannot be an exposure host port on a node with these ports (undefined: it can). */
export function hostPortProblem(hostPort: number, r: ReservedPorts): string | undefined {
  if (hostPort >= r.pool.low && hostPort <= r.pool.high) return `host port ${hostPort} is inside the port pool ${r.pool.low}-${r.pool.high} (see appswitch daemon --ports)`;
  if (r.daemon.includes(hostPort)) return `host port ${hostPort} is a port of the appswitch daemon`;
  return undefined;
}

/** Where a wanted exposure comes from: an app's --expose ('app', origin: the app id) or the cluster object ('api',
 * origin: the object's name). */
export interface ExposureClaim {
  vip: string;
  port: number;
  hostPort: number;
  source: 'app' | 'api';
  origin: string;
  /** When it was asked for (ms since the epoch): the older claim keeps a host port. */
  since: number;
}

/** One exposure as the cluster has it: a service at a host port, from one or more claims. */
export interface Exposure {
  vip: string;
  port: number;
  hostPort: number;
  sources: Array<'app' | 'api'>;
  since: number;
  /** active: gateways listen for it; conflict: another service holds the host port (`holder`). */
  state: 'active' | 'conflict';
  holder?: string;
}

/** The name of an exposure cluster object: `VIP:PORT` (IPv6 in brackets). */
export function exposureName(vip: string, port: number): string {
  return vip.includes(':') ? `[${vip}]:${port}` : `${vip}:${port}`;
}

/** Merges the claims: one exposure per service and host port, then per host port the oldest service keeps it (ties:
 * the lower VIP:PORT text, so that every node decides alike). Sorted by host port. */
export function effectiveExposures(claims: readonly ExposureClaim[]): Exposure[] {
  const byKey = new Map<string, Exposure>();
  for (const c of claims) {
    const k = `${c.hostPort}/${exposureName(c.vip, c.port)}`;
    const e = byKey.get(k);
    if (!e) {
      byKey.set(k, { vip: c.vip, port: c.port, hostPort: c.hostPort, sources: [c.source], since: c.since, state: 'active' });
      continue;
    }
    if (!e.sources.includes(c.source)) e.sources.push(c.source);
    e.since = Math.min(e.since, c.since);
  }
  const byPort = new Map<number, Exposure[]>();
  for (const e of byKey.values()) {
    const l = byPort.get(e.hostPort);
    if (l) l.push(e);
    else byPort.set(e.hostPort, [e]);
  }
  const out: Exposure[] = [];
  for (const [, list] of [...byPort].sort((a, b) => a[0] - b[0])) {
    list.sort((a, b) => a.since - b.since || (exposureName(a.vip, a.port) < exposureName(b.vip, b.port) ? -1 : 1));
    const first = list[0] as Exposure;
    for (const e of list) {
      e.sources.sort();
      if (e !== first) {
        e.state = 'conflict';
        e.holder = exposureName(first.vip, first.port);
      }
      out.push(e);
    }
  }
  return out;
}
