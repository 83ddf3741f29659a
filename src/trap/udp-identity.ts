/** Who sends datagrams: the daemon's side of virtual identities for UDP (native/udp_recv.c is the generator's).
 *
 * - Senders: a generator reports each UDP socket's real endpoint before its first datagram or connect (UDP_FROM); a
 *   socket the program bound is known by its binding anyway. A receiver's generator asks who sent from a real
 *   endpoint (UDP_WHO): on this node the reports and bindings say; on another node, that node's daemon (the peer
 *   API, as for a TCP accept); anything else is unidentified, and the generator drops its datagrams — as an
 *   unidentified connection is dropped at accept.
 * - Return paths: once an app was told that identity:port sent to it, its datagrams to identity:port go to the real
 *   endpoint behind it (a server answering a client that has no service of its own: an ephemeral port).
 * Pure apart from timers: no I/O. */
import type { ClientIdentity } from './client-reports.js';
import type { Endpoint } from '../table/endpoint.js';

/** A datagram sender: its app's identity, and the port it is seen from (its bound virtual port, else its real one). */
export interface UdpSender extends ClientIdentity {
  port: number;
}

/** How long an unknown local sender's question waits for that sender's report, which its generator sends before the
 * datagram leaves, so it is in the daemon's queue already: this only covers the daemon getting to it. */
export const UDP_REPORT_WAIT_MS = 100;
const SENDERS_MAX = 200_000;
const PATHS_MAX = 100_000;

interface SenderReport {
  appId: string;
  /** Socket inode (the sweep forgets reports of sockets that are gone). */
  ino: string;
  at: number;
}

export interface UdpIdentityDeps {
  /** This node's app by id (its identity and tags now). */
  app: (appId: string) => { identity: string; tags: Record<string, string> } | undefined;
  /** The UDP binding of this node at real endpoint "ip:port": its app and virtual port. */
  boundAt: (key: string) => { appId: string; port: number } | undefined;
}

export class UdpIdentity {
  /** Real endpoint "ip:port" of a reported UDP socket of this node -> who reported it, oldest first. */
  private readonly senders = new Map<string, SenderReport>();
  private readonly waiters = new Map<string, Array<() => void>>();
  /** "appId|identity:port" -> the real endpoint behind it, least recently learned first. */
  private readonly paths = new Map<string, Endpoint>();

  constructor(private readonly deps: UdpIdentityDeps) {}

  /** A UDP socket of app `appId` sends from `key` (its real endpoint on this node). */
  report(appId: string, key: string, ino: string): void {
    this.senders.delete(key);
    this.senders.set(key, { appId, ino, at: Date.now() });
    if (this.senders.size > SENDERS_MAX) this.senders.delete(this.senders.keys().next().value as string);
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      for (const f of w) f();
    }
  }

  /** Who sends from this node's real endpoint `key`, if anyone says so now. */
  local(key: string): UdpSender | undefined {
    const b = this.deps.boundAt(key);
    const r = b ? { appId: b.appId } : this.senders.get(key);
    const app = r ? this.deps.app(r.appId) : undefined;
    if (!r || !app) return undefined;
    return { identity: app.identity, appId: r.appId, tags: app.tags, port: b ? b.port : Number(key.slice(key.lastIndexOf(':') + 1)) };
  }

  /** local(), waiting up to waitMs for a report that may still be on its way. */
  localWait(key: string, waitMs = UDP_REPORT_WAIT_MS): Promise<UdpSender | undefined> {
    const now = this.local(key);
    if (now || waitMs <= 0) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        const l = this.waiters.get(key);
        if (l) {
          const i = l.indexOf(done);
          if (i >= 0) l.splice(i, 1);
          if (!l.length) this.waiters.delete(key);
        }
        resolve(this.local(key));
      };
      const t = setTimeout(done, waitMs);
      const l = this.waiters.get(key);
      if (l) l.push(done);
      else this.waiters.set(key, [done]);
    });
  }

  /** App `appId` was told that `who` (identity:port) sends from `real`: its datagrams to who go there. */
  learn(appId: string, who: Endpoint, real: Endpoint): void {
    const k = `${appId}|${who.ip}:${who.port}`;
    this.paths.delete(k);
    this.paths.set(k, real);
    if (this.paths.size > PATHS_MAX) this.paths.delete(this.paths.keys().next().value as string);
  }

  /** The real endpoint behind `dst` for app `appId`, if it was told about that sender. */
  returnPath(appId: string, dst: Endpoint): Endpoint | undefined {
    return this.paths.get(`${appId}|${dst.ip}:${dst.port}`);
  }

  /** Forgets reports of sockets that are gone (`liveSockets`: inodes of every socket now; reports made after
   * `snapshotAt` are kept, they may not be in it yet). */
  sweep(liveSockets: Set<string>, snapshotAt: number): void {
    for (const [k, r] of this.senders) if (r.at < snapshotAt && !liveSockets.has(r.ino)) this.senders.delete(k);
  }

  /** The app ended: its reports and what it learned go. */
  forgetApp(appId: string): void {
    for (const [k, r] of this.senders) if (r.appId === appId) this.senders.delete(k);
    const prefix = `${appId}|`;
    for (const k of this.paths.keys()) if (k.startsWith(prefix)) this.paths.delete(k);
  }

  /** Reported senders and learned return paths (for tests and status). */
  get sizes(): { senders: number; paths: number } {
    return { senders: this.senders.size, paths: this.paths.size };
  }
}
