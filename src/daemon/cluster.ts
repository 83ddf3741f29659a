/** Replicates the service table between hosts over SWIM gossip: this node publishes its own entries in its
 * gossip store (each host is authoritative for its own entries), and mirrors every other node's entries into the
 * local table. A dead or left node's entries are withdrawn by the gossip layer and so leave the table. */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { AppswitchError } from '../errors.js';
import { formatAddress, type MemberInfo, Memberlist, type ProfileName, tryParseAddress, UdpTransport } from '../gossip/index.js';
import type { AppDirectory, AppEntry } from '../table/directory.js';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';

export interface ClusterOptions {
  nodeName: string;
  nodeAddress: string;
  gossipPort: number;
  joins: string[];
  keys?: Uint8Array[];
  profile: ProfileName;
  table: ServiceTable;
  directory: AppDirectory;
  log: Logger;
}

const APP_PREFIX = '@app/';

/** Validates an app record that came from another node. */
export function decodeRemoteApp(node: string, key: string, value: Uint8Array): AppEntry | undefined {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(Buffer.from(value).toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null || !str(o.id) || key !== APP_PREFIX + o.id || !str(o.identity) || typeof o.vip !== 'boolean') {
    return undefined;
  }
  const tags: Record<string, string> = {};
  if (o.tags && typeof o.tags === 'object') {
    for (const [k, v] of Object.entries(o.tags as Record<string, unknown>)) if (typeof v === 'string') tags[k] = v;
  }
  const e: AppEntry = { id: o.id, node, identity: o.identity, vip: o.vip, tags };
  if (str(o.name)) e.name = o.name;
  return e;
}

/** Reads a keyring file: one base64 (or 64-hex-digit) 32-byte key per line; '#' starts a comment. */
export function readKeyring(file: string): Uint8Array[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const keys: Uint8Array[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const key = /^[0-9a-f]{64}$/i.test(line) ? Buffer.from(line, 'hex') : Buffer.from(line, 'base64');
    if (key.length !== 32) throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}:${i + 1}: a key must be 32 bytes (base64 or hex)`);
    keys.push(new Uint8Array(key));
  });
  if (keys.length === 0) throw new AppswitchError('ERR_CONFIG', `--gossip-key ${file}: no key in the file`);
  return keys;
}

function str(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length < 300;
}
function port(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536;
}

/** Validates an entry that came from another node; its node must be the node that published it. */
export function decodeRemoteEntry(node: string, key: string, value: Uint8Array): ServiceEntry | undefined {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(Buffer.from(value).toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null) return undefined;
  const ep = o.endpoint as Record<string, unknown> | undefined;
  if (!str(o.vip) || !port(o.port) || (o.proto !== 'tcp' && o.proto !== 'udp') || !str(o.appId)) return undefined;
  if (!ep || !str(ep.ip) || !port(ep.port) || typeof o.version !== 'number') return undefined;
  if (key !== o.id || !key.startsWith(`${node}/`)) return undefined;
  const tags: Record<string, string> = {};
  if (o.tags && typeof o.tags === 'object') {
    for (const [k, v] of Object.entries(o.tags as Record<string, unknown>)) if (typeof v === 'string') tags[k] = v;
  }
  const e: ServiceEntry = {
    id: key,
    vip: o.vip,
    port: o.port,
    proto: o.proto,
    node,
    endpoint: { ip: ep.ip, port: ep.port },
    appId: o.appId,
    tags,
    version: o.version,
  };
  if (str(o.name)) e.name = o.name;
  if (o.lb === 'random' || o.lb === 'round-robin' || o.lb === 'least-conn' || o.lb === 'p2c') e.lb = o.lb;
  return e;
}

export class Cluster {
  private constructor(
    readonly ml: Memberlist,
    private readonly transport: UdpTransport,
    private readonly opts: ClusterOptions,
  ) {}

  static async start(opts: ClusterOptions): Promise<Cluster> {
    const transport = await UdpTransport.create({
      bindAddress: opts.nodeAddress,
      port: opts.gossipPort,
      advertiseAddress: formatAddress(opts.nodeAddress, opts.gossipPort),
    });
    const mlOpts: ConstructorParameters<typeof Memberlist>[0] = { name: opts.nodeName, transport, profile: opts.profile, logger: opts.log };
    if (opts.keys) mlOpts.keyring = opts.keys;
    const ml = new Memberlist(mlOpts);
    const c = new Cluster(ml, transport, opts);
    c.wire();
    if (opts.joins.length) {
      const seeds = opts.joins.map((j) => (tryParseAddress(j) ? j : formatAddress(j, opts.gossipPort)));
      ml.join(seeds).then(
        (n) => opts.log.info({ seeds, contacted: n }, 'joined the cluster'),
        (e: unknown) => opts.log.error({ err: e, seeds }, 'could not join the cluster'),
      );
    }
    return c;
  }

  /** Publishes (value) or withdraws (undefined) one of this node's keys. The gossip store refuses past its caps
   * (ERR_GOSSIP_TOO_MANY_KEYS, ...): that is logged (rate-limited) and counted, and never thrown into the caller — the
   * table and directory listeners run inside the trap path (a program's bind, listen, registration), where a throw
   * once ended the daemon. The entry then stays served on this node, unannounced. */
  private gossip(key: string, value: string | undefined): void {
    try {
      if (value === undefined) this.ml.deleteLocal(key);
      else this.ml.setLocal(key, value);
    } catch (e) {
      this.unpublished++;
      const now = Date.now();
      if (now - this.unpublishedLogged < 10_000) return;
      this.unpublishedLogged = now;
      this.opts.log.warn({ err: e, key, unpublished: this.unpublished }, 'gossip refused to publish an entry of this node (it stays served here, unannounced)');
    }
  }

  /** Entries gossip refused to publish (see gossip()), since start. */
  unpublished = 0;
  private unpublishedLogged = 0;

  private wire(): void {
    const { table, directory, nodeName, log } = this.opts;
    for (const a of directory.all()) if (a.node === nodeName) this.gossip(APP_PREFIX + a.id, JSON.stringify(a));
    directory.on('added', (a) => {
      if (a.node === nodeName) this.gossip(APP_PREFIX + a.id, JSON.stringify(a));
    });
    directory.on('removed', (a) => {
      if (a.node === nodeName) this.gossip(APP_PREFIX + a.id, undefined);
    });
    const publish = (e: ServiceEntry): void => {
      const { socket: _socket, ...pub } = e;
      this.gossip(e.id, JSON.stringify(pub));
    };
    for (const e of table.all()) if (e.node === nodeName) publish(e);
    table.on('added', (e) => {
      if (e.node === nodeName) publish(e);
    });
    table.on('removed', (e) => {
      if (e.node === nodeName) this.gossip(e.id, undefined);
    });
    this.ml.on('change', (ev) => {
      if (ev.node === nodeName) return;
      if (ev.key.startsWith(APP_PREFIX)) {
        const id = ev.key.slice(APP_PREFIX.length);
        if (ev.value === undefined) {
          if (directory.get(id)?.node === ev.node) directory.remove(id);
          return;
        }
        const a = decodeRemoteApp(ev.node, ev.key, ev.value);
        if (a) directory.put(a);
        else log.warn({ node: ev.node, key: ev.key }, 'malformed app record from gossip dropped');
        return;
      }
      if (ev.value === undefined) {
        if (table.get(ev.key)?.node === ev.node) table.remove(ev.key);
        return;
      }
      const e = decodeRemoteEntry(ev.node, ev.key, ev.value);
      if (!e) {
        log.warn({ node: ev.node, key: ev.key }, 'malformed service entry from gossip dropped');
        return;
      }
      table.upsert(e);
    });
    // one line per state change (the gossip layer also reports address changes and repeats)
    const known = new Map<string, { state: string; address: string }>();
    this.ml.on('member', (m) => {
      const prev = known.get(m.name);
      known.set(m.name, { state: m.state, address: m.address });
      if (prev?.state === m.state) {
        if (prev.address !== m.address) log.info({ member: m.name, address: m.address, previousAddress: prev.address }, 'member address changed');
        return;
      }
      log.info({ member: m.name, address: m.address, state: m.state, previous: prev?.state ?? 'new', incarnation: m.incarnation }, 'member state');
    });
  }

  members(): MemberInfo[] {
    return this.ml.members();
  }

  get address(): string {
    return this.transport.localAddress;
  }

  /** Announces that this node leaves, then closes the sockets. */
  async stop(): Promise<void> {
    try {
      await this.ml.leave();
    } finally {
      this.ml.shutdown();
      this.transport.close();
    }
  }
}
