/** Outside clients' connections accepted on this node without asking the daemon: steered to a server by the kernel, or
 * relayed by a gateway whose preamble named the client (the generators' AS_CLAIMED batches, native/gen_ingress.c and
 * gen_preamble.c). For `appswitch get connections` as direction "in", client app "external".
 *
 * They come at the rate of a web server's new connections, tens of thousands a second, and a tracked record each
 * (ConnectionTracker's Map entry and object) cost a daemon a tenth of a core (bench/RESULTS.md, "Ingress"). So they
 * are kept as the generator's own 40-byte entries in a ring, with their time and app: adding one is a copy, and they
 * are decoded only when listed. The newest OUTSIDE_MAX are kept; the oldest give way (counted in `overwritten`).
 * The sweep's snapshot says which are closed: they are left out of the list and the count, and dropped when the ring
 * is more than half full (so that a long connection is not pushed out by the short ones that came and went since).
 * A row's client endpoint is the outside client's own address and port; for a relayed connection, the peer the server
 * sees in the kernel is the gateway's relay. */
import { endpointKey } from '../table/endpoint.js';
import type { ConnectionSnapshot, ConnectionView } from './connection-view.js';
import { CLAIMED_ENTRY_SIZE, decodeOutsideClaim, type OutsideClaims, outsideClaimPeer } from './protocol.js';

export const OUTSIDE_MAX = 65_536;
const SIZE = CLAIMED_ENTRY_SIZE;

export class OutsideConnections {
  private readonly raw: Buffer;
  private readonly at: Float64Array;
  private readonly app: string[];
  /** The entries are the slots start .. start + n - 1 (modulo max), oldest first. */
  private start = 0;
  private n = 0;
  private node = '';
  /** The last sweep's view: the remote endpoints of the namespace's open TCP sockets, and when it was read. */
  private live?: { remote: Set<string>; takenAt: number };
  /** Entries that gave way to newer ones while their connection may still have been open. */
  overwritten = 0;

  constructor(private readonly max = OUTSIDE_MAX) {
    this.raw = Buffer.alloc(max * SIZE);
    this.at = new Float64Array(max);
    this.app = new Array<string>(max).fill('');
  }

  /** A batch of outside claims of the server app `appId` on node `node`. */
  add(appId: string, node: string, claims: OutsideClaims, now = Date.now()): void {
    this.node = node;
    let k = 0;
    while (k < claims.count) {
      const want = Math.min(claims.count - k, this.max);
      const over = this.n + want - this.max;
      if (over > 0) { /* full: the oldest give way */
        this.start = (this.start + over) % this.max;
        this.n -= over;
        this.overwritten += over;
      }
      const slot = (this.start + this.n) % this.max;
      const take = Math.min(want, this.max - slot); /* up to where the ring wraps, in one copy */
      claims.entries.copy(this.raw, slot * SIZE, k * SIZE, (k + take) * SIZE);
      this.at.fill(now, slot, slot + take);
      this.app.fill(appId, slot, slot + take);
      this.n += take;
      k += take;
    }
  }

  /** The sweep's snapshot: what is closed by then. */
  sweep(s: ConnectionSnapshot): void {
    this.live = { remote: s.tcpRemote, takenAt: s.takenAt };
    if (this.n > this.max / 2) this.compact();
  }

  /** Open ones, as far as the last sweep knows (a connection reported since counts as open). */
  get size(): number {
    let c = 0;
    for (let i = 0; i < this.n; i++) if (this.open((this.start + i) % this.max)) c++;
    return c;
  }

  list(now = Date.now()): ConnectionView[] {
    const out: ConnectionView[] = [];
    for (let i = 0; i < this.n; i++) {
      const slot = (this.start + i) % this.max;
      if (!this.open(slot)) continue;
      const c = decodeOutsideClaim(this.raw, slot);
      const at = this.at[slot] as number;
      out.push({
        direction: 'in',
        path: 'tcp',
        client: c.client.ip,
        clientApp: 'external',
        clientEndpoint: endpointKey(c.client), /* the outside client's own (the sweep looks for the server socket's peer) */
        service: null,
        endpoint: '-',
        serverApp: this.app[slot] as string,
        serverNode: this.node,
        accepted: true,
        since: new Date(at).toISOString(),
        ageSeconds: Math.max(0, Math.round((now - at) / 1000)),
      });
    }
    return out;
  }

  private open(slot: number): boolean {
    const live = this.live;
    if (!live || (this.at[slot] as number) >= live.takenAt) return true;
    return live.remote.has(endpointKey(outsideClaimPeer(this.raw, slot)));
  }

  /** Drops the closed entries, keeping the order of the rest. */
  private compact(): void {
    let w = 0;
    for (let i = 0; i < this.n; i++) {
      const slot = (this.start + i) % this.max;
      if (!this.open(slot)) continue;
      const to = (this.start + w) % this.max;
      if (to !== slot) {
        this.raw.copy(this.raw, to * SIZE, slot * SIZE, (slot + 1) * SIZE);
        this.at[to] = this.at[slot] as number;
        this.app[to] = this.app[slot] as string;
      }
      w++;
    }
    for (let i = w; i < this.n; i++) this.app[(this.start + i) % this.max] = ''; /* no app id kept alive by a free slot */
    this.n = w;
  }
}
