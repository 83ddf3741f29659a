// Replicated per-node key/value store: each node is authoritative for its own keys; versions are (epoch, version)
// pairs so that a restarted process (newer epoch) replaces everything its predecessor published.

import type { KvMsg, StoreRecord } from './codec.js';
import { nameHash, utf8, validShortString } from './codec.js';
import { GossipError } from './errors.js';

/** A change visible to the application: `value === undefined` means the key is gone. */
export interface StoreChange {
  node: string;
  key: string;
  value: Uint8Array | undefined;
}

/** Caps of the store (see docs/gossip.md). */
export interface StoreLimits {
  /** Live keys per node (tombstones are capped separately at the same number). */
  maxKeysPerNode: number;
  /** Bytes per value. */
  maxValueBytes: number;
  /** Nodes with a store section (including nodes not (yet) known as members). */
  maxNodes: number;
}

interface Entry {
  value: Uint8Array | null;
  version: number;
  /** Local time of the last change (tombstone expiry). */
  at: number;
}

interface NodeStore {
  name: string;
  epoch: number;
  entries: Map<string, Entry>;
  live: number;
  tombstones: number;
  visible: boolean;
}

/** Outcome of applying a remote update. */
export type ApplyOutcome =
  | { result: 'applied'; changes: StoreChange[] }
  | { result: 'stale' | 'rejected-cap' }
  /** An update about our own keys that forces us to re-publish (owner wins): broadcast `reissue`. */
  | { result: 'self-conflict'; reissue: KvMsg[] };

/**
 * The store of one member: its own keys plus the latest known keys of every other node.
 *
 * Ordering rule: an update (epoch, version) replaces the stored one when epoch is newer, or the epoch is equal and
 * version is greater. A newer epoch for a node drops all its older-epoch keys. Changes are reported only for
 * visible nodes (alive/suspect members and ourselves); hiding a node reports deletes for its keys, showing it again
 * reports them back.
 */
export class ReplicatedStore {
  private readonly nodes = new Map<string, NodeStore>();
  private version = 0;
  private liveHash = 0;

  /** XOR of a hash of every live (node, key, epoch, version): equal stores have equal hashes. */
  get hash(): number {
    return this.liveHash >>> 0;
  }

  private entryHash(ns: NodeStore, key: string, version: number): number {
    return nameHash(`${ns.name}\u0000${key}\u0000${ns.epoch}\u0000${version}`);
  }

  /**
   * @param self our node name
   * @param epoch our store epoch (ms wall clock at process start; a restart gets a newer one)
   */
  constructor(
    readonly self: string,
    epoch: number,
    private readonly limits: StoreLimits,
    private readonly now: () => number,
  ) {
    this.nodes.set(self, { name: self, epoch, entries: new Map(), live: 0, tombstones: 0, visible: true });
  }

  /** Our current epoch. */
  get epoch(): number {
    return this.local().epoch;
  }

  /** Epoch known for `node`, or undefined. */
  epochOf(node: string): number | undefined {
    return this.nodes.get(node)?.epoch;
  }

  /**
   * Sets one of our keys. Returns the update to broadcast and the change to report.
   * @throws GossipError ERR_GOSSIP_KEY_INVALID, ERR_GOSSIP_VALUE_TOO_LARGE, ERR_GOSSIP_TOO_MANY_KEYS
   */
  setLocal(key: string, value: Uint8Array | string): { msg: KvMsg; change: StoreChange } {
    if (!validShortString(key)) throw new GossipError('ERR_GOSSIP_KEY_INVALID', 'key must be 1..255 UTF-8 bytes');
    const bytes = typeof value === 'string' ? utf8(value) : Uint8Array.from(value);
    if (bytes.length > this.limits.maxValueBytes) {
      throw new GossipError('ERR_GOSSIP_VALUE_TOO_LARGE', `value is ${bytes.length} bytes, cap ${this.limits.maxValueBytes}`);
    }
    const ns = this.local();
    const prev = ns.entries.get(key);
    if ((prev === undefined || prev.value === null) && ns.live >= this.limits.maxKeysPerNode) {
      throw new GossipError('ERR_GOSSIP_TOO_MANY_KEYS', `node already has ${ns.live} keys`);
    }
    const version = ++this.version;
    this.put(ns, key, { value: bytes, version, at: this.now() });
    return {
      msg: { kind: 'kv', node: this.self, epoch: ns.epoch, version, key, value: bytes },
      change: { node: this.self, key, value: bytes },
    };
  }

  /** Deletes one of our keys (leaves a tombstone). Undefined when the key does not exist. */
  deleteLocal(key: string): { msg: KvMsg; change: StoreChange } | undefined {
    const ns = this.local();
    const prev = ns.entries.get(key);
    if (prev === undefined || prev.value === null) return undefined;
    const version = ++this.version;
    this.put(ns, key, { value: null, version, at: this.now() });
    return {
      msg: { kind: 'kv', node: this.self, epoch: ns.epoch, version, key, value: null },
      change: { node: this.self, key, value: undefined },
    };
  }

  /** One of our values. */
  getLocal(key: string): Uint8Array | undefined {
    return this.local().entries.get(key)?.value ?? undefined;
  }

  /** Applies an update received from the network (gossip or push-pull). */
  apply(node: string, epoch: number, version: number, key: string, value: Uint8Array | null): ApplyOutcome {
    if (node === this.self) return this.applyAboutSelf(epoch, version, key, value);
    if (value !== null && value.length > this.limits.maxValueBytes) return { result: 'rejected-cap' };
    let ns = this.nodes.get(node);
    const changes: StoreChange[] = [];
    if (ns === undefined) {
      if (this.nodes.size >= this.limits.maxNodes) return { result: 'rejected-cap' };
      ns = { name: node, epoch, entries: new Map(), live: 0, tombstones: 0, visible: false };
      this.nodes.set(node, ns);
    } else if (epoch < ns.epoch) {
      return { result: 'stale' };
    } else if (epoch > ns.epoch) {
      this.purge(node, ns, changes);
      ns.epoch = epoch;
    }
    const prev = ns.entries.get(key);
    if (prev !== undefined && prev.version >= version) {
      return changes.length > 0 ? { result: 'applied', changes } : { result: 'stale' };
    }
    if (value !== null && (prev === undefined || prev.value === null) && ns.live >= this.limits.maxKeysPerNode) {
      return { result: 'rejected-cap' };
    }
    if (value === null && prev === undefined) {
      // A tombstone for a key we never saw: keep it (it stops an older value arriving later) within the cap.
      if (ns.tombstones >= this.limits.maxKeysPerNode) this.dropOldestTombstone(ns);
    }
    this.put(ns, key, { value, version, at: this.now() });
    if (ns.visible) {
      const wasLive = prev !== undefined && prev.value !== null;
      if (value !== null) changes.push({ node, key, value });
      else if (wasLive) changes.push({ node, key, value: undefined });
    }
    return { result: 'applied', changes };
  }

  /**
   * Records that `node` runs with `epoch` (learnt from an alive message). A newer epoch drops its older keys.
   * Returns the resulting changes.
   */
  noteEpoch(node: string, epoch: number): StoreChange[] {
    if (node === this.self) return [];
    const changes: StoreChange[] = [];
    const ns = this.nodes.get(node);
    if (ns === undefined) {
      if (this.nodes.size < this.limits.maxNodes) {
        this.nodes.set(node, { name: node, epoch, entries: new Map(), live: 0, tombstones: 0, visible: false });
      }
    } else if (epoch > ns.epoch) {
      this.purge(node, ns, changes);
      ns.epoch = epoch;
    }
    return changes;
  }

  /**
   * Our epoch must move past `epoch` (someone holds a newer epoch for our name: an older process of ours with a
   * clock ahead of ours). Returns updates re-publishing every live key under the new epoch.
   */
  supersedeEpoch(epoch: number): KvMsg[] {
    const ns = this.local();
    const live = [...ns.entries].filter(([, e]) => e.value !== null);
    this.purge(this.self, ns, []);
    ns.epoch = epoch + 1;
    this.version = 0;
    const out: KvMsg[] = [];
    for (const [key, e] of live) {
      const version = ++this.version;
      this.put(ns, key, { value: e.value, version, at: e.at });
      out.push({ kind: 'kv', node: this.self, epoch: ns.epoch, version, key, value: e.value });
    }
    return out;
  }

  private applyAboutSelf(epoch: number, version: number, key: string, value: Uint8Array | null): ApplyOutcome {
    const ns = this.local();
    if (epoch > ns.epoch) return { result: 'self-conflict', reissue: this.supersedeEpoch(epoch) };
    if (epoch < ns.epoch) return { result: 'stale' };
    const mine = ns.entries.get(key);
    if (version > this.version) this.version = version;
    const conflicting =
      (mine !== undefined && version >= mine.version && !sameValue(mine.value, value)) ||
      (mine === undefined && value !== null);
    if (!conflicting) return { result: 'stale' };
    // Owner wins: publish our truth for that key with a version above anything seen.
    const v = ++this.version;
    const current = mine?.value ?? null;
    this.put(ns, key, { value: current, version: v, at: this.now() });
    return { result: 'self-conflict', reissue: [{ kind: 'kv', node: this.self, epoch: ns.epoch, version: v, key, value: current }] };
  }

  /** Shows or hides a node's keys (member alive/suspect vs dead/left). Returns the changes to report. */
  setVisible(node: string, visible: boolean): StoreChange[] {
    if (node === this.self) return [];
    const ns = this.nodes.get(node);
    if (ns === undefined || ns.visible === visible) {
      if (ns === undefined && visible && this.nodes.size < this.limits.maxNodes) {
        this.nodes.set(node, { name: node, epoch: 0, entries: new Map(), live: 0, tombstones: 0, visible: true });
      }
      return [];
    }
    ns.visible = visible;
    const changes: StoreChange[] = [];
    for (const [key, e] of ns.entries) {
      if (e.value !== null) changes.push({ node, key, value: visible ? e.value : undefined });
    }
    return changes;
  }

  /** Forgets a node entirely (reaped member). Returns deletes if it was visible. */
  drop(node: string): StoreChange[] {
    if (node === this.self) return [];
    const ns = this.nodes.get(node);
    if (ns === undefined) return [];
    const changes: StoreChange[] = [];
    this.purge(node, ns, changes);
    this.nodes.delete(node);
    return changes;
  }

  /** Removes tombstones older than `ttlMs`. Returns how many were removed. */
  expireTombstones(ttlMs: number): number {
    const cutoff = this.now() - ttlMs;
    let n = 0;
    for (const ns of this.nodes.values()) {
      if (ns.tombstones === 0) continue;
      for (const [key, e] of ns.entries) {
        if (e.value === null && e.at < cutoff) {
          ns.entries.delete(key);
          ns.tombstones--;
          n++;
        }
      }
    }
    return n;
  }

  /** Nodes that have a store section. */
  nodeNames(): string[] {
    return [...this.nodes.keys()];
  }

  /** The store section of one node (tombstones included), for push-pull. */
  record(node: string): StoreRecord | undefined {
    const ns = this.nodes.get(node);
    if (ns === undefined) return undefined;
    const entries: StoreRecord['entries'] = [];
    for (const [key, e] of ns.entries) entries.push({ key, version: e.version, value: e.value });
    return { node, epoch: ns.epoch, entries };
  }

  /** Live keys of one node, when it is visible (a fresh copy). */
  nodeView(node: string): Map<string, Uint8Array> | undefined {
    const ns = this.nodes.get(node);
    if (ns === undefined || !ns.visible) return undefined;
    const m = new Map<string, Uint8Array>();
    for (const [key, e] of ns.entries) if (e.value !== null) m.set(key, e.value);
    return m;
  }

  /** Live keys of visible nodes. */
  view(): Map<string, Map<string, Uint8Array>> {
    const out = new Map<string, Map<string, Uint8Array>>();
    for (const [node, ns] of this.nodes) {
      if (!ns.visible || ns.live === 0) continue;
      const m = new Map<string, Uint8Array>();
      for (const [key, e] of ns.entries) if (e.value !== null) m.set(key, e.value);
      out.set(node, m);
    }
    return out;
  }

  /** Totals for stats. */
  counts(): { nodes: number; liveKeys: number; tombstones: number } {
    let liveKeys = 0;
    let tombstones = 0;
    for (const ns of this.nodes.values()) {
      liveKeys += ns.live;
      tombstones += ns.tombstones;
    }
    return { nodes: this.nodes.size, liveKeys, tombstones };
  }

  private local(): NodeStore {
    return this.nodes.get(this.self)!;
  }

  private put(ns: NodeStore, key: string, e: Entry): void {
    const prev = ns.entries.get(key);
    if (prev !== undefined) {
      if (prev.value === null) ns.tombstones--;
      else {
        ns.live--;
        this.liveHash ^= this.entryHash(ns, key, prev.version);
      }
    }
    if (e.value === null) ns.tombstones++;
    else {
      ns.live++;
      this.liveHash ^= this.entryHash(ns, key, e.version);
    }
    ns.entries.set(key, e);
    if (e.value === null && ns.tombstones > this.limits.maxKeysPerNode) this.dropOldestTombstone(ns);
  }

  private dropOldestTombstone(ns: NodeStore): void {
    let oldestKey: string | undefined;
    let oldestAt = Infinity;
    for (const [key, e] of ns.entries) {
      if (e.value === null && e.at < oldestAt) {
        oldestAt = e.at;
        oldestKey = key;
      }
    }
    if (oldestKey !== undefined) {
      ns.entries.delete(oldestKey);
      ns.tombstones--;
    }
  }

  private purge(node: string, ns: NodeStore, changes: StoreChange[]): void {
    for (const [key, e] of ns.entries) {
      if (e.value === null) continue;
      this.liveHash ^= this.entryHash(ns, key, e.version);
      if (ns.visible) changes.push({ node, key, value: undefined });
    }
    ns.entries.clear();
    ns.live = 0;
    ns.tombstones = 0;
  }
}

function sameValue(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
