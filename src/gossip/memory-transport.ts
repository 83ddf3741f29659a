// In-memory network on a VirtualClock: latency with jitter, seeded loss, partitions and per-node stalls (a node
// whose event loop is blocked). Deterministic for a given seed; the test and simulator substrate for SWIM.

import type { Clock, TimerHandle } from './clock.js';
import { VirtualClock } from './clock.js';
import { GossipError } from './errors.js';
import { seededRandom, type RandomSource } from './random.js';
import {
  DEFAULT_MAX_STREAM_BYTES,
  type PacketHandler,
  type StreamCallback,
  type StreamHandler,
  type Transport,
} from './transport.js';

/** Options of a {@link MemoryNetwork}. */
export interface MemoryNetworkOptions {
  /** Shared clock; a new VirtualClock when omitted. */
  clock?: VirtualClock;
  /** Seed of the network's PRNG (loss and jitter). Default 1. */
  seed?: number;
  /** One-way base latency in ms. Default 1. */
  latencyMs?: number;
  /** Uniform extra latency in [0, jitterMs). Default 0. */
  jitterMs?: number;
  /** Probability in [0, 1] that a datagram is lost. Streams are never lost (TCP), only blocked. Default 0. */
  lossRate?: number;
  /** Cap on one stream frame. Default 8 MiB. */
  maxStreamBytes?: number;
}

/** Traffic counters of a {@link MemoryNetwork}. */
export interface MemoryNetworkStats {
  packetsSent: number;
  packetsDelivered: number;
  packetsLost: number;
  packetsBlocked: number;
  bytesSent: number;
  streamsOpened: number;
  streamBytes: number;
}

/** Called for every datagram handed to the network (before loss/partition), e.g. to capture one for replay. */
export type PacketTap = (from: string, to: string, buf: Uint8Array) => void;

interface NodeSlot {
  addr: string;
  transport: MemoryTransport;
  stalledUntil: number;
  backlog: Array<() => void>;
  flushScheduled: boolean;
  bytesOut: number;
  bytesIn: number;
}

const PRIO_NORMAL = 0;
/** Backlog flushes run after the timers of the same instant: a blocked Node loop runs due timers first, then I/O. */
const PRIO_BACKLOG = 1;

/**
 * A simulated network of {@link MemoryTransport}s sharing one {@link VirtualClock}.
 *
 * Stalls model a blocked event loop: while a node is stalled, packets, stream requests/responses and timers meant
 * for it are held; when the stall ends its due timers fire first, then the backlog is processed in arrival order.
 */
export class MemoryNetwork {
  readonly clock: VirtualClock;
  private readonly random: RandomSource;
  private readonly nodes = new Map<string, NodeSlot>();
  private partitions: Array<[Set<string>, Set<string>]> = [];
  private taps: PacketTap[] = [];
  latencyMs: number;
  jitterMs: number;
  lossRate: number;
  readonly maxStreamBytes: number;
  readonly counters: MemoryNetworkStats = {
    packetsSent: 0,
    packetsDelivered: 0,
    packetsLost: 0,
    packetsBlocked: 0,
    bytesSent: 0,
    streamsOpened: 0,
    streamBytes: 0,
  };

  constructor(opts: MemoryNetworkOptions = {}) {
    this.clock = opts.clock ?? new VirtualClock();
    this.random = seededRandom(opts.seed ?? 1);
    this.latencyMs = opts.latencyMs ?? 1;
    this.jitterMs = opts.jitterMs ?? 0;
    this.lossRate = opts.lossRate ?? 0;
    this.maxStreamBytes = opts.maxStreamBytes ?? DEFAULT_MAX_STREAM_BYTES;
  }

  /** Creates (or replaces, after the old one was closed) the transport bound to `addr`. */
  createTransport(addr: string): MemoryTransport {
    const old = this.nodes.get(addr);
    if (old !== undefined && !old.transport.closed) throw new Error(`address in use: ${addr}`);
    const t = new MemoryTransport(this, addr);
    this.nodes.set(addr, {
      addr,
      transport: t,
      stalledUntil: 0,
      backlog: [],
      flushScheduled: false,
      bytesOut: old?.bytesOut ?? 0,
      bytesIn: old?.bytesIn ?? 0,
    });
    return t;
  }

  /** A clock for the node at `addr` whose timers are held while the node is stalled. */
  clockFor(addr: string): Clock {
    const clock = this.clock;
    const net = this;
    interface NodeTimer {
      inner: TimerHandle | null;
    }
    return {
      now: (): number => clock.now(),
      setTimeout(cb: () => void, ms: number): TimerHandle {
        const h: NodeTimer = { inner: null };
        const fire = (): void => {
          const slot = net.nodes.get(addr);
          if (slot !== undefined && slot.stalledUntil > clock.now()) {
            h.inner = clock.schedule(fire, slot.stalledUntil - clock.now(), PRIO_NORMAL);
            return;
          }
          h.inner = null;
          cb();
        };
        h.inner = clock.schedule(fire, ms, PRIO_NORMAL);
        return h;
      },
      clearTimeout(handle: TimerHandle): void {
        const h = handle as NodeTimer;
        if (h.inner !== null) clock.clearTimeout(h.inner);
        h.inner = null;
      },
    };
  }

  /** Cuts every path between a member of `a` and a member of `b` (both directions) until {@link heal}. */
  partition(a: readonly string[], b: readonly string[]): void {
    this.partitions.push([new Set(a), new Set(b)]);
  }

  /** Removes all partitions. */
  heal(): void {
    this.partitions = [];
  }

  /** True when traffic between the two addresses is cut. */
  isBlocked(x: string, y: string): boolean {
    for (const [a, b] of this.partitions) {
      if ((a.has(x) && b.has(y)) || (b.has(x) && a.has(y))) return true;
    }
    return false;
  }

  /** Blocks the node's event loop for `ms`: nothing it receives and none of its timers run until then. */
  stall(addr: string, ms: number): void {
    const slot = this.nodes.get(addr);
    if (slot === undefined) throw new Error(`unknown node ${addr}`);
    slot.stalledUntil = Math.max(slot.stalledUntil, this.clock.now() + ms);
    this.scheduleFlush(slot);
  }

  /** Registers a tap on every datagram sent. Returns a function that removes it. */
  tap(fn: PacketTap): () => void {
    this.taps.push(fn);
    return () => {
      this.taps = this.taps.filter((t) => t !== fn);
    };
  }

  /** Delivers `buf` to `to` as if sent by `from`, after the usual latency, bypassing loss and partitions. */
  inject(from: string, to: string, buf: Uint8Array): void {
    this.clock.schedule(() => this.deliverPacket(from, to, buf), this.latency(), PRIO_NORMAL);
  }

  /** Bytes sent and received by one node so far. */
  nodeBytes(addr: string): { out: number; in: number } {
    const s = this.nodes.get(addr);
    return { out: s?.bytesOut ?? 0, in: s?.bytesIn ?? 0 };
  }

  /** @internal */
  sendPacket(from: string, to: string, buf: Uint8Array): void {
    const c = this.counters;
    c.packetsSent++;
    c.bytesSent += buf.length;
    const src = this.nodes.get(from);
    if (src !== undefined) src.bytesOut += buf.length;
    for (const t of this.taps) t(from, to, buf);
    if (this.lossRate > 0 && this.random() < this.lossRate) {
      c.packetsLost++;
      return;
    }
    if (this.partitions.length > 0 && this.isBlocked(from, to)) {
      c.packetsBlocked++;
      return;
    }
    this.clock.schedule(() => this.deliverPacket(from, to, buf), this.latency(), PRIO_NORMAL);
  }

  /** @internal */
  request(from: string, to: string, req: Uint8Array, timeoutMs: number, cb: StreamCallback): void {
    this.counters.streamsOpened++;
    this.counters.streamBytes += req.length;
    let done = false;
    const finish = (err: GossipError | undefined, resp: Uint8Array | undefined): void => {
      if (done) return;
      done = true;
      this.clock.clearTimeout(timer);
      this.runOn(from, () => {
        const src = this.nodes.get(from);
        if (src === undefined || src.transport.closed) return;
        cb(err, resp);
      });
    };
    const timer = this.clock.schedule(
      () => finish(new GossipError('ERR_GOSSIP_TIMEOUT', `stream to ${to} timed out`), undefined),
      timeoutMs,
      PRIO_NORMAL,
    );
    if (req.length > this.maxStreamBytes) {
      this.clock.schedule(
        () => finish(new GossipError('ERR_GOSSIP_FRAME_TOO_LARGE', 'request frame too large'), undefined),
        0,
        PRIO_NORMAL,
      );
      return;
    }
    if (this.isBlocked(from, to)) return; // SYNs vanish: the requester times out
    const lat = this.latency();
    this.clock.schedule(
      () => {
        const dst = this.nodes.get(to);
        if (dst === undefined || dst.transport.closed) {
          this.clock.schedule(
            () => finish(new GossipError('ERR_GOSSIP_UNREACHABLE', `connection refused by ${to}`), undefined),
            lat,
            PRIO_NORMAL,
          );
          return;
        }
        dst.bytesIn += req.length;
        const src0 = this.nodes.get(from);
        if (src0 !== undefined) src0.bytesOut += req.length;
        this.runOn(to, () => {
          const handler = dst.transport.streamHandler;
          if (dst.transport.closed || handler === undefined) {
            finish(new GossipError('ERR_GOSSIP_UNREACHABLE', `stream closed by ${to}`), undefined);
            return;
          }
          let replied = false;
          handler(from, req, (resp) => {
            if (replied) return;
            replied = true;
            if (resp === undefined) {
              this.clock.schedule(
                () => finish(new GossipError('ERR_GOSSIP_UNREACHABLE', `stream closed by ${to}`), undefined),
                this.latency(),
                PRIO_NORMAL,
              );
              return;
            }
            if (resp.length > this.maxStreamBytes) {
              this.clock.schedule(
                () => finish(new GossipError('ERR_GOSSIP_FRAME_TOO_LARGE', 'response frame too large'), undefined),
                this.latency(),
                PRIO_NORMAL,
              );
              return;
            }
            this.counters.streamBytes += resp.length;
            dst.bytesOut += resp.length;
            const src = this.nodes.get(from);
            if (src !== undefined) src.bytesIn += resp.length;
            if (this.isBlocked(from, to)) return; // cut mid-flight: requester times out
            this.clock.schedule(() => finish(undefined, resp), this.latency(), PRIO_NORMAL);
          });
        });
      },
      lat,
      PRIO_NORMAL,
    );
  }

  private deliverPacket(from: string, to: string, buf: Uint8Array): void {
    const dst = this.nodes.get(to);
    if (dst === undefined || dst.transport.closed) return;
    this.counters.packetsDelivered++;
    dst.bytesIn += buf.length;
    this.runOn(to, () => {
      const h = dst.transport.packetHandler;
      if (!dst.transport.closed && h !== undefined) h(from, buf);
    });
  }

  /** Runs `fn` in the context of node `addr`: now, or after its stall ends. */
  private runOn(addr: string, fn: () => void): void {
    const slot = this.nodes.get(addr);
    if (slot !== undefined && slot.stalledUntil > this.clock.now()) {
      slot.backlog.push(fn);
      this.scheduleFlush(slot);
      return;
    }
    fn();
  }

  private scheduleFlush(slot: NodeSlot): void {
    if (slot.flushScheduled) return;
    slot.flushScheduled = true;
    const flush = (): void => {
      if (slot.stalledUntil > this.clock.now()) {
        this.clock.schedule(flush, slot.stalledUntil - this.clock.now(), PRIO_BACKLOG);
        return;
      }
      slot.flushScheduled = false;
      const items = slot.backlog;
      slot.backlog = [];
      for (const fn of items) fn();
    };
    this.clock.schedule(flush, slot.stalledUntil - this.clock.now(), PRIO_BACKLOG);
  }

  private latency(): number {
    return this.jitterMs > 0 ? this.latencyMs + this.random() * this.jitterMs : this.latencyMs;
  }
}

/** A {@link Transport} endpoint on a {@link MemoryNetwork}. */
export class MemoryTransport implements Transport {
  /** @internal */ packetHandler: PacketHandler | undefined;
  /** @internal */ streamHandler: StreamHandler | undefined;
  /** @internal */ closed = false;

  constructor(
    private readonly net: MemoryNetwork,
    readonly localAddress: string,
  ) {}

  sendPacket(addr: string, buf: Uint8Array): void {
    if (this.closed) return;
    this.net.sendPacket(this.localAddress, addr, buf);
  }

  onPacket(cb: PacketHandler): void {
    this.packetHandler = cb;
  }

  request(addr: string, req: Uint8Array, timeoutMs: number, cb: StreamCallback): void {
    if (this.closed) {
      this.net.clock.setTimeout(
        () => cb(new GossipError('ERR_GOSSIP_TRANSPORT_CLOSED', 'transport closed'), undefined),
        0,
      );
      return;
    }
    this.net.request(this.localAddress, addr, req, timeoutMs, cb);
  }

  onStream(cb: StreamHandler): void {
    this.streamHandler = cb;
  }

  close(): void {
    this.closed = true;
  }
}
