/** Replicates the service table between hosts over SWIM gossip: this node publishes its own entries, apps and its
 * `@node` record (port pool, daemon ports) in its gossip store (each host is authoritative for its own), and mirrors
 * every other node's into the local table once they pass validation (see gossip-records.ts): an entry must point at
 * its node's own address and pool. An entry that cannot be checked yet (its node's record has not arrived) waits in
 * the gossip store and is checked again when the record comes. A dead or left node's entries are withdrawn by the
 * gossip layer and so leave the table.
 * Cluster objects (table/cluster-objects.ts) are replicated differently: every node publishes its own copy of every
 * object and tombstone under `@obj/<kind>/<name>` and merges what every other node publishes (last writer wins), so an
 * object outlives the node that made it and a node that was down catches up; a node that goes away withdraws only
 * its copies. */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { formatAddress, type MemberInfo, Memberlist, type NameConflict, type ProfileName, RateLimitedWarn, systemClock, tryParseAddress, UdpTransport } from '../gossip/index.js';
import type { InternalErrors } from './internal-errors.js';
import type { VirtualRanges } from '../table/addresses.js';
import { type ClusterObject, type ClusterObjects, MAX_OBJECTS } from '../table/cluster-objects.js';
import type { AppDirectory } from '../table/directory.js';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';
import { APP_PREFIX, canonicalIp, decodeNodeRecord, decodeObjectRecord, decodeRemoteApp, decodeRemoteEntry, NODE_KEY, type NodeRecord, OBJ_PREFIX, objectKey } from './gossip-records.js';

export { readKeyring } from './gossip-key.js';
export { decodeRemoteApp, decodeRemoteEntry, type NodeRecord } from './gossip-records.js';

export interface ClusterOptions {
  nodeName: string;
  nodeAddress: string;
  gossipPort: number;
  joins: string[];
  /** The cluster key ring (first encrypts); absent only with --gossip-plaintext. */
  keys?: Uint8Array[];
  profile: ProfileName;
  table: ServiceTable;
  directory: AppDirectory;
  /** This node's virtual ranges: no remote endpoint may fall inside them. */
  ranges: VirtualRanges;
  /** This node's `@node` record. */
  node: NodeRecord;
  log: Logger;
  /** Unexpected exceptions in gossip's socket handlers and timers (they cost that packet or round). */
  errors?: InternalErrors;
  /** The cluster objects this node keeps (loaded from its file before the cluster starts). */
  objects?: ClusterObjects;
}

/** Keys a node publishes about itself (its `@node` record, apps and services): the gossip layer's default cap, kept
 * by publish() now that the store's cap also makes room for cluster objects. */
export const NODE_KEYS = 1024;
/** Keys per node in the gossip store: NODE_KEYS plus one per cluster object. Every node must use the same cap (a
 * push-pull with more keys is refused as malformed). */
export const GOSSIP_KEYS_PER_NODE = NODE_KEYS + MAX_OBJECTS;

/** One node of the cluster as the trap side needs it: its address and the ports its daemon listens on there. */
export interface NodeDaemon {
  node: string;
  /** The node's address (IP, canonical). */
  address: string;
  /** gossip, peer API, DNS and (when served) metrics ports; from the node's record, or, until that arrives, the
   * gossip port of its member address and this node's peer port (the peer port is the same on every node). */
  ports: number[];
  state: MemberInfo['state'];
  /** The node's published record, once received and valid. */
  record?: NodeRecord;
}

export interface ClusterEvents {
  /** The set of nodes, an address or a node record changed (see daemons()). */
  nodes: [];
  /** A member's state changed (the same changes the `member state` log line reports). */
  member: [{ name: string; address: string; state: string; previous?: string }];
}

/** Refusal lines logged per 10 s before they are rate-limited. */
const REFUSAL_LINES = 20;

export class Cluster extends EventEmitter<ClusterEvents> {
  /** Valid `@node` records of the other nodes. */
  private readonly records = new Map<string, NodeRecord>();
  /** Entries and app records refused (never applied), by node/key; each distinct refusal is logged once. */
  private readonly refusedKeys = new Map<string, string>();
  private readonly warn: RateLimitedWarn;
  private refusalWindow = { at: 0, lines: 0 };
  /** Records from other nodes refused so far. */
  rejected = 0;
  /** This node's own keys published (not cluster objects): at most NODE_KEYS. */
  private readonly ownKeys = new Set<string>();

  private constructor(
    readonly ml: Memberlist,
    private readonly transport: UdpTransport,
    private readonly opts: ClusterOptions,
  ) {
    super();
    this.warn = new RateLimitedWarn(opts.log, () => Date.now(), 10_000);
  }

  static async start(opts: ClusterOptions): Promise<Cluster> {
    const transport = await UdpTransport.create({
      bindAddress: opts.nodeAddress,
      port: opts.gossipPort,
      advertiseAddress: formatAddress(opts.nodeAddress, opts.gossipPort),
      ...(opts.errors ? { onInternalError: opts.errors.reporter('gossip') } : {}),
    });
    const mlOpts: ConstructorParameters<typeof Memberlist>[0] = { name: opts.nodeName, transport, profile: opts.profile, logger: opts.log };
    if (opts.errors) mlOpts.clock = opts.errors.guardClock(systemClock, 'gossip');
    if (opts.keys) mlOpts.keyring = opts.keys;
    mlOpts.limits = { maxKeysPerNode: GOSSIP_KEYS_PER_NODE };
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

  /** Sets one of this node's gossip keys; a cap of the gossip store (too many keys, a value too large) is logged,
   * never thrown into the caller (an app's hello, a listen). */
  private publish(key: string, value: string | undefined): void {
    const own = !key.startsWith(OBJ_PREFIX);
    try {
      if (value === undefined) {
        this.ml.deleteLocal(key);
        if (own) this.ownKeys.delete(key);
      } else {
        if (own && !this.ownKeys.has(key) && this.ownKeys.size >= NODE_KEYS) {
          throw Object.assign(new Error(`this node publishes ${NODE_KEYS} keys of its own already`), { code: 'ERR_GOSSIP_TOO_MANY_KEYS' });
        }
        this.ml.setLocal(key, value);
        if (own) this.ownKeys.add(key);
      }
    } catch (e) {
      this.warn.warn(`publish:${(e as { code?: string }).code ?? 'error'}`, { key, err: e }, 'gossip refused to publish an entry of this node (it stays served here, unannounced)');
    }
  }

  /** Changes this node's `@node` record (e.g. the metrics port, once it listens). */
  updateNode(patch: Partial<NodeRecord>): void {
    Object.assign(this.opts.node, patch);
    this.publish(NODE_KEY, JSON.stringify(this.opts.node));
    this.emit('nodes');
  }

  private wire(): void {
    const { table, directory, nodeName } = this.opts;
    this.publish(NODE_KEY, JSON.stringify(this.opts.node));
    for (const a of directory.all()) if (a.node === nodeName) this.publish(APP_PREFIX + a.id, JSON.stringify(a));
    directory.on('added', (a) => {
      if (a.node === nodeName) this.publish(APP_PREFIX + a.id, JSON.stringify(a));
    });
    directory.on('removed', (a) => {
      if (a.node === nodeName) this.publish(APP_PREFIX + a.id, undefined);
    });
    const publishEntry = (e: ServiceEntry): void => {
      const { socket: _socket, ...pub } = e;
      this.publish(e.id, JSON.stringify(pub));
    };
    for (const e of table.all()) if (e.node === nodeName) publishEntry(e);
    table.on('added', (e) => {
      if (e.node === nodeName) publishEntry(e);
    });
    table.on('removed', (e) => {
      if (e.node === nodeName) this.publish(e.id, undefined);
    });
    const objects = this.opts.objects;
    if (objects) {
      const publishObject = (o: ClusterObject): void => this.publish(objectKey(o), JSON.stringify(o));
      for (const o of objects.all()) publishObject(o);
      objects.on('changed', publishObject);
      objects.on('dropped', (o) => this.publish(objectKey(o), undefined));
    }
    this.ml.on('change', (ev) => {
      if (ev.node === nodeName) return;
      if (ev.key === NODE_KEY) return this.onNodeRecord(ev.node, ev.value);
      if (ev.key.startsWith(OBJ_PREFIX)) return this.onObject(ev.node, ev.key, ev.value);
      if (ev.key.startsWith(APP_PREFIX)) return this.onApp(ev.node, ev.key, ev.value);
      this.onEntry(ev.node, ev.key, ev.value);
    });
    // one line per state change (the gossip layer also reports address changes and repeats)
    const known = new Map<string, { state: string; address: string }>();
    this.ml.on('member', (m) => {
      const prev = known.get(m.name);
      known.set(m.name, { state: m.state, address: m.address });
      if (m.state === 'left' || m.state === 'dead') known.delete(m.name);
      if (m.name !== nodeName && m.address !== prev?.address) this.recheck(m.name);
      this.emit('nodes');
      if (prev?.state === m.state) {
        if (prev.address !== m.address) this.opts.log.info({ member: m.name, address: m.address, previousAddress: prev.address }, 'member address changed');
        return;
      }
      this.opts.log.info({ member: m.name, address: m.address, state: m.state, previous: prev?.state ?? 'new', incarnation: m.incarnation }, 'member state');
      this.emit('member', { name: m.name, address: m.address, state: m.state, previous: prev?.state ?? 'new' });
    });
  }

  /** Counts a refused record and logs it: once per key and reason, and at most REFUSAL_LINES lines per 10 s in all
   * (then one line per 10 s says how many were refused), so a member publishing junk cannot flood the log. */
  private refuse(node: string, key: string, reason: string): void {
    this.rejected++;
    const k = `${node}\u0000${key}`;
    if (this.refusedKeys.get(k) === reason) return;
    if (this.refusedKeys.size >= 4096) this.refusedKeys.clear();
    this.refusedKeys.set(k, reason);
    const now = Date.now();
    if (now - this.refusalWindow.at >= 10_000) this.refusalWindow = { at: now, lines: 0 };
    if (++this.refusalWindow.lines <= REFUSAL_LINES) this.opts.log.warn({ node, key, reason }, 'record from gossip refused');
    else this.warn.warn('refused', { node, key, reason, refusedSoFar: this.rejected }, `records from gossip refused (over ${REFUSAL_LINES} in 10 s: one line per 10 s)`);
  }

  private onNodeRecord(node: string, value: Uint8Array | undefined): void {
    if (value === undefined) {
      this.records.delete(node);
    } else {
      const r = decodeNodeRecord(value);
      if (r.ok) this.records.set(node, r.value);
      else {
        this.records.delete(node);
        this.refuse(node, NODE_KEY, r.reason);
      }
    }
    this.recheck(node);
    this.emit('nodes');
  }

  private onApp(node: string, key: string, value: Uint8Array | undefined): void {
    const { directory, nodeName, ranges } = this.opts;
    const id = key.slice(APP_PREFIX.length);
    if (value === undefined) {
      if (directory.get(id)?.node === node) directory.remove(id);
      return;
    }
    const a = decodeRemoteApp(node, key, value, ranges, (ip) => directory.all().some((x) => x.node === nodeName && x.identity === ip));
    if (a.ok) {
      const had = directory.get(id);
      if (had && had.node !== node) return this.refuse(node, key, `app id ${id} belongs to node ${had.node}`);
      directory.put(a.value);
      return;
    }
    if (directory.get(id)?.node === node) directory.remove(id);
    this.refuse(node, key, a.reason);
  }

  /** A node's copy of a cluster object: merged (last writer wins); an invalid one is refused. A copy that a node
   * withdraws (it left, or dropped an old tombstone) changes nothing: the other copies stand. */
  private onObject(node: string, key: string, value: Uint8Array | undefined): void {
    const objects = this.opts.objects;
    if (value === undefined || !objects) return;
    const o = decodeObjectRecord(key, value);
    if (!o.ok) return this.refuse(node, key, o.reason);
    const before = objects.refused;
    objects.merge(o.value);
    if (objects.refused !== before) this.refuse(node, key, objects.lastRefusal ?? 'invalid object');
  }

  /** The publishing node's gossip address (IP), while it is a member that is not gone. */
  private addressOf(node: string): string | undefined {
    const m = this.ml.member(node);
    if (!m || m.state === 'dead' || m.state === 'left') return undefined;
    const hp = tryParseAddress(m.address);
    return hp ? canonicalIp(hp.host) : undefined;
  }

  private onEntry(node: string, key: string, value: Uint8Array | undefined): void {
    const { table, ranges } = this.opts;
    if (value === undefined) {
      if (table.get(key)?.node === node) table.remove(key);
      return;
    }
    if (node.startsWith('@')) return this.refuse(node, key, "a node name starting with '@' is reserved (@vservice)");
    const e = decodeRemoteEntry(node, key, value, { address: this.addressOf(node), record: this.records.get(node), ranges });
    if (e.ok) {
      const had = table.get(key);
      if (had && had.node !== node) return this.refuse(node, key, `entry id belongs to node ${had.node}`);
      table.upsert(e.value);
      return;
    }
    if (table.get(key)?.node === node) table.remove(key); /* its new value is not acceptable: the old one goes too */
    if (!e.wait) this.refuse(node, key, e.reason);
  }

  /** Checks every service entry of `node` again (its record or address changed): entries that waited are applied,
   * entries that no longer pass leave the table. */
  private recheck(node: string): void {
    const keys = this.ml.nodeView(node);
    if (!keys) return;
    for (const [key, value] of keys) if (!key.startsWith('@')) this.onEntry(node, key, value);
  }

  /** A node's address, daemon ports and record; undefined for a node that is not a member. */
  nodeInfo(name: string): NodeDaemon | undefined {
    const m = this.ml.member(name);
    if (!m) return undefined;
    const hp = tryParseAddress(m.address);
    const address = hp ? canonicalIp(hp.host) : undefined;
    if (!hp || address === undefined) return undefined;
    const record = name === this.opts.nodeName ? this.opts.node : this.records.get(name);
    const ports = record
      ? [record.gossipPort, record.peerPort, record.dnsPort, ...(record.metricsPort !== undefined ? [record.metricsPort] : []), ...(record.uiPort !== undefined ? [record.uiPort] : [])]
      : [hp.port, this.opts.node.peerPort];
    const d: NodeDaemon = { node: name, address, ports: [...new Set(ports)], state: m.state };
    if (record) d.record = { ...record, ports: { ...record.ports } };
    return d;
  }

  /** Every known node, this one included, with the ports its daemon listens on (gone members included: refusing
   * their ports costs nothing). Changes are announced by the 'nodes' event. */
  daemons(): NodeDaemon[] {
    const out: NodeDaemon[] = [];
    for (const m of this.ml.members()) {
      const d = this.nodeInfo(m.name);
      if (d) out.push(d);
    }
    return out;
  }

  /** Whether ip is the address of another node that is a member now (alive or suspect). */
  isPeerAddress(ip: string): boolean {
    const c = canonicalIp(ip);
    if (c === undefined) return false;
    for (const m of this.ml.members()) {
      if (m.name === this.opts.nodeName || m.state === 'dead' || m.state === 'left') continue;
      const hp = tryParseAddress(m.address);
      if (hp && canonicalIp(hp.host) === c) return true;
    }
    return false;
  }

  members(): MemberInfo[] {
    return this.ml.members();
  }

  /** Live nodes that gossip under this node's name from another address (logged as errors by the gossip layer). */
  conflicts(): NameConflict[] {
    return this.ml.conflicts();
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
