/** The service table: virtual (vip, port, proto) -> real host endpoints, with the owning app's name and tags.
 * Host-local entries and, once gossip replicates them, entries of other nodes live side by side: every entry
 * names its node, and each node versions its own entries, so a replica can tell newer from older. */
import { EventEmitter } from 'node:events';
import type { Endpoint } from './endpoint.js';

export type Proto = 'tcp' | 'udp';

export interface ServiceKey {
  vip: string;
  port: number;
  proto: Proto;
}

/** One instance of a service. Several instances on one key form a client-side load-balanced service. */
export interface ServiceEntry extends ServiceKey {
  /** Unique across the cluster: `${node}/${appId}/${socket}`. */
  id: string;
  node: string;
  endpoint: Endpoint;
  appId: string;
  name?: string;
  tags: Record<string, string>;
  /** The owning node's version counter when the entry was written. */
  version: number;
  /** The service's own load-balancing strategy (from `appswitch run --lb`), else the daemon's. */
  lb?: 'random' | 'round-robin' | 'least-conn' | 'p2c';
  /** The family of the program's listening socket (4: AF_INET, 6: AF_INET6): a dual-stack server has one of each on
   * one service, and each client goes to the socket of its own family (table/family.ts). Missing: unknown. */
  family?: 4 | 6;
  /** Local entries only: the socket inode, to notice when the program closes it. */
  socket?: string;
}

/** The node that entries of virtual services (external backends, src/vservice/) name: no member has it (a member's
 * name cannot start with '@'); such entries are never published as a node's, nor withdrawn with a dead node. */
export const VSERVICE_NODE = '@vservice';

export function keyString(k: ServiceKey): string {
  return `${k.proto}/${k.vip}/${k.port}`;
}

export interface TableEvents {
  added: [ServiceEntry];
  removed: [ServiceEntry];
}

/** In-memory service table. Emits 'added' and 'removed'. */
export class ServiceTable extends EventEmitter<TableEvents> {
  private readonly byId = new Map<string, ServiceEntry>();
  private readonly byKey = new Map<string, Map<string, ServiceEntry>>();
  private version = 0;

  /** The next version number for an entry this node writes. */
  nextVersion(): number {
    this.version = Math.max(this.version + 1, Date.now());
    return this.version;
  }

  /** Inserts or replaces an entry (by id); an older version of an existing entry is ignored. */
  upsert(e: ServiceEntry): boolean {
    const old = this.byId.get(e.id);
    if (old && old.version > e.version) return false;
    if (old) this.removeFromKey(old);
    this.byId.set(e.id, e);
    const k = keyString(e);
    let m = this.byKey.get(k);
    if (!m) this.byKey.set(k, (m = new Map()));
    m.set(e.id, e);
    if (!old) this.emit('added', e);
    return true;
  }

  remove(id: string): ServiceEntry | undefined {
    const e = this.byId.get(id);
    if (!e) return undefined;
    this.byId.delete(id);
    this.removeFromKey(e);
    this.emit('removed', e);
    return e;
  }

  /** Removes every entry the predicate selects; returns them. */
  removeWhere(pred: (e: ServiceEntry) => boolean): ServiceEntry[] {
    const gone = [...this.byId.values()].filter(pred);
    for (const e of gone) this.remove(e.id);
    return gone;
  }

  /** Instances of a service, in insertion order. */
  lookup(k: ServiceKey): ServiceEntry[] {
    const m = this.byKey.get(keyString(k));
    return m ? [...m.values()] : [];
  }

  get(id: string): ServiceEntry | undefined {
    return this.byId.get(id);
  }

  all(): ServiceEntry[] {
    return [...this.byId.values()];
  }

  get size(): number {
    return this.byId.size;
  }

  private removeFromKey(e: ServiceEntry): void {
    const k = keyString(e);
    const m = this.byKey.get(k);
    if (!m) return;
    m.delete(e.id);
    if (m.size === 0) this.byKey.delete(k);
  }
}
