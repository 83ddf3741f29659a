/** The app directory: every app under appswitch in the cluster (this node's and, through gossip, the others'),
 * with its identity, vip and name. It answers DNS (name -> vip, vip -> name) and keeps vips and link-local
 * identities unique across the cluster. */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import ipaddr from 'ipaddr.js';
import type { ExposeSpec } from '../gateway/exposures.js';

export interface AppEntry {
  id: string;
  node: string;
  /** The vip (from --ip, or assigned for --name), else the link-local identity. */
  identity: string;
  /** True when identity is a vip (reachable by name), false for a link-local client identity. */
  vip: boolean;
  name?: string;
  tags: Record<string, string>;
  /** `appswitch run --expose`: ports of the app reached from outside at gateway host ports (see gateway/exposures.ts). */
  expose?: ExposeSpec[];
  /** When the app asked for them (its start, ms since the epoch): the older exposure keeps a host port. */
  exposedAt?: number;
}

export interface DirectoryEvents {
  added: [AppEntry];
  removed: [AppEntry];
}

export class AppDirectory extends EventEmitter<DirectoryEvents> {
  private readonly apps = new Map<string, AppEntry>();

  put(e: AppEntry): void {
    const had = this.apps.has(e.id);
    this.apps.set(e.id, e);
    if (!had) this.emit('added', e);
  }

  remove(id: string): void {
    const e = this.apps.get(id);
    if (!e) return;
    this.apps.delete(id);
    this.emit('removed', e);
  }

  removeNode(node: string): void {
    for (const e of [...this.apps.values()]) if (e.node === node) this.remove(e.id);
  }

  get(id: string): AppEntry | undefined {
    return this.apps.get(id);
  }

  all(): AppEntry[] {
    return [...this.apps.values()];
  }

  /** vips of the apps named `name` (lower case). */
  vipsOf(name: string): string[] {
    const out = new Set<string>();
    for (const e of this.apps.values()) if (e.vip && e.name === name) out.add(e.identity);
    return [...out];
  }

  /** The name of the app whose vip is ip. */
  nameOf(ip: string): string | undefined {
    for (const e of this.apps.values()) if (e.vip && e.identity === ip && e.name) return e.name;
    return undefined;
  }

  /** Whether ip is taken by an app other than one named `name`. */
  takenByOther(ip: string, name?: string): boolean {
    for (const e of this.apps.values()) if (e.identity === ip && (name === undefined || e.name !== name)) return true;
    return false;
  }

  /** A vip for `name`: the one its other instances already have, else a stable hash of the name into the first
   * IPv4 vip range, probing on past addresses other apps hold. */
  vipForName(name: string, cidr: string): string {
    const existing = this.vipsOf(name);
    if (existing.length) return existing[0] as string;
    const [net, bits] = ipaddr.parseCIDR(cidr);
    if (net.kind() !== 'ipv4' || bits > 30) throw new RangeError(`cannot assign vips from ${cidr}`);
    const size = 2 ** (32 - bits);
    const base = Number(BigInt('0x' + Buffer.from(net.toByteArray()).toString('hex'))) & ~(size - 1);
    let h = createHash('sha256').update(name).digest().readUInt32BE(0) % size;
    for (let i = 0; i < size; i++, h = (h + 1) % size) {
      if (h === 0 || h === size - 1) continue; /* network and broadcast addresses */
      const n = (base + h) >>> 0;
      const ip = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
      if (!this.takenByOther(ip, name)) return ip;
    }
    throw new RangeError(`no free vip in ${cidr}`);
  }
}
