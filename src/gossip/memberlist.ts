// SWIM + Lifeguard membership with a replicated per-node key/value store (the protocol core). Pure: all I/O goes
// through the injected Transport, Clock, RandomSource and logger; nothing here awaits, so it runs unchanged on
// virtual time.

import { randomBytes } from 'node:crypto';
import { Awareness } from './awareness.js';
import { BroadcastQueue, type Pending } from './broadcast.js';
import type { Clock, TimerHandle } from './clock.js';
import { systemClock } from './clock.js';
import {
  DecodeError,
  MESSAGE_KINDS,
  decodeMessages,
  encodeMessage,
  nameHash,
  frameMessage,
  validShortString,
  writeMemberRecord,
  writeStoreRecord,
  Writer,
  type AliveMsg,
  type DeadMsg,
  type DecodeLimits,
  type Digest,
  type KvMsg,
  type MemberRecord,
  type MemberState,
  type Message,
  type PushPullMsg,
  type SuspectMsg,
} from './codec.js';
import {
  pushPullScale,
  resolveConfig,
  resolveLimits,
  retransmitLimit,
  type GossipLimits,
  type ProfileName,
  type ProtocolConfig,
} from './config.js';
import { NameConflicts, type NameConflict } from './conflicts.js';
import { Keyring } from './crypto.js';
import {
  envelopeOverhead,
  finishEnvelope,
  openEnvelope,
  prepareBody,
  REPLAY_HEADER_BYTES,
  sealedSize,
  sealEnvelope,
  writeReplayHeader,
  type DropReason,
  type PreparedBody,
} from './envelope.js';
import { GossipError } from './errors.js';
import { RateLimitedWarn, silentLogger, type GossipLogger } from './log.js';
import { pickRandom, randomInt, shuffle, type RandomSource } from './random.js';
import { ReplayGuard } from './replay.js';
import { Counters, type CapReason, type GossipStats } from './stats.js';
import { ReplicatedStore, type StoreChange } from './store.js';
import { suspicionTimeout, Suspicion } from './suspicion.js';
import { tryParseAddress, type Transport } from './transport.js';

/** Public view of one member. */
export interface MemberInfo {
  name: string;
  address: string;
  state: MemberState;
  incarnation: number;
}

/** Emitted on 'member' when a member appears, changes state, or changes address. */
export type MemberEvent = MemberInfo;

/** Emitted on 'change' when a visible key appears, changes, or disappears (`value === undefined`). */
export interface ChangeEvent {
  node: string;
  key: string;
  value: Uint8Array | undefined;
}

/** Event map of {@link Memberlist}. */
export interface MemberlistEvents {
  member: MemberEvent;
  change: ChangeEvent;
}

/** Options to create a {@link Memberlist}. */
export interface MemberlistOptions {
  /** Unique node name (1..255 UTF-8 bytes). */
  name: string;
  transport: Transport;
  /** Timing profile; default 'lan'. */
  profile?: ProfileName;
  /** Overrides of the profile's timings. */
  config?: Partial<ProtocolConfig>;
  /** Overrides of the default caps. */
  limits?: Partial<GossipLimits>;
  /** AES-256-GCM keys (32 bytes each). The first encrypts; all decrypt. Omit for plaintext. */
  keyring?: readonly Uint8Array[];
  /** Drop replayed/stale packets. Default: on when a keyring is set (it is meaningless without authentication). */
  replayProtection?: boolean;
  /** Address advertised to others; default `transport.localAddress`. */
  advertiseAddress?: string;
  clock?: Clock;
  /** Randomness for protocol choices (probe order, gossip targets). Default Math.random. */
  random?: RandomSource;
  logger?: GossipLogger;
  /** Store epoch of this process; default `clock.now()` (a restart therefore gets a newer epoch). */
  epoch?: number;
}

/** Options of {@link Memberlist.join}. */
export interface JoinOptions {
  /** Give up (reject with ERR_GOSSIP_JOIN_FAILED) after this many rounds over all seeds. Default: retry forever. */
  maxAttempts?: number;
}

interface Member {
  name: string;
  address: string;
  incarnation: number;
  state: MemberState;
  epoch: number;
  stateChange: number;
  suspicion: Suspicion | undefined;
  /** Index in `memberArr`. */
  idx: number;
  /** nameHash(name), for the membership digest. */
  hash: number;
}

interface AckHandler {
  onAck(digest: Digest | undefined): void;
  onNack(): void;
}

type Listener<E extends keyof MemberlistEvents> = (ev: MemberlistEvents[E]) => void;

/** Suspects buddy-pinged per probe tick at most. */
const SUSPECT_PINGS = 3;

/** What to do about packets dropped for a key mismatch: the log line says it, since a node whose key differs looks
 * healthy but never joins. */
const KEY_HINTS: Partial<Record<DropReason, string>> = {
  'decrypt-failed': 'the sender uses another cluster key (or forged the packet): give every node the same key file',
  unencrypted: 'the sender sends plaintext (no key, or --gossip-plaintext; or a forged packet): give every node the same key file',
  'encrypted-no-keyring': 'the sender encrypts but this node runs without a key (--gossip-plaintext): give every node the same key file',
};

function isGone(s: MemberState): boolean {
  return s === 'dead' || s === 'left';
}

function memberKey(node: string): string {
  return `m:${node}`;
}

function kvKey(node: string, key: string): string {
  return `k:${node}\u0000${key}`;
}

/**
 * One cluster member running SWIM with the Lifeguard extensions, plus the replicated store.
 *
 * Lifecycle: construct (starts the protocol timers and listens on the transport) → `join(seeds)` → … →
 * `leave()` → `shutdown()`. Nothing throws out of packet or stream handling: bad input is dropped, counted in
 * `stats().dropped` and logged (rate-limited).
 */
export class Memberlist {
  /** This node's name. */
  readonly name: string;
  /** Resolved timings. */
  readonly config: Readonly<ProtocolConfig>;
  /** Resolved caps. */
  readonly limits: Readonly<GossipLimits>;

  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly random: RandomSource;
  private readonly logger: GossipLogger;
  private readonly warnLimited: RateLimitedWarn;
  private keyring: Keyring | undefined;
  private readonly replayOn: boolean;
  private readonly packetGuard: ReplayGuard;
  private readonly streamGuard: ReplayGuard;
  private readonly decodeLimits: DecodeLimits;
  private readonly counters = new Counters();
  private readonly awareness: Awareness;
  private readonly queue: BroadcastQueue;
  private readonly store: ReplicatedStore;
  private readonly session: number;
  private packetSeq = 0;
  private probeSeq = 0;

  private readonly table = new Map<string, Member>();
  private readonly memberArr: Member[] = [];
  private readonly self: Member;
  private probeOrder: string[] = [];
  private probeIndex = 0;
  private readonly ackHandlers = new Map<number, AckHandler>();
  private relays = 0;
  private inboundStreams = 0;
  private readonly peerKey = new Map<string, number>();
  private lastDigestSync = -Infinity;
  /** Members currently suspect (for buddy pings). */
  private readonly suspects = new Set<Member>();
  /** Live nodes found using our name from another address (see conflicts.ts). */
  private readonly nameConflicts: NameConflicts;

  private readonly timers = new Set<TimerHandle>();
  private readonly listeners: { [E in keyof MemberlistEvents]: Array<Listener<E>> } = { member: [], change: [] };
  private leaving = false;
  private closed = false;
  private quiet = 0;
  private pendingJoins: Array<(err: GossipError) => void> = [];

  constructor(opts: MemberlistOptions) {
    if (!validShortString(opts.name)) throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'name must be 1..255 UTF-8 bytes');
    this.name = opts.name;
    this.config = resolveConfig(opts.profile ?? 'lan', opts.config);
    this.limits = resolveLimits(opts.limits);
    this.transport = opts.transport;
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.logger = opts.logger ?? silentLogger;
    this.warnLimited = new RateLimitedWarn(this.logger, () => this.clock.now());
    this.keyring = opts.keyring !== undefined ? new Keyring(opts.keyring) : undefined;
    this.replayOn = opts.replayProtection ?? this.keyring !== undefined;
    const guardOpts = { maxAgeMs: this.config.replayMaxAge, maxSessions: this.limits.maxReplaySessions };
    this.packetGuard = new ReplayGuard(guardOpts);
    this.streamGuard = new ReplayGuard(guardOpts);
    this.decodeLimits = {
      maxValueBytes: this.limits.maxValueBytes,
      maxMembers: this.limits.maxMembers,
      maxKeysPerNode: 2 * this.limits.maxKeysPerNode, // live keys + tombstones
    };
    this.awareness = new Awareness(this.config.awarenessMaxMultiplier);
    this.queue = new BroadcastQueue(this.limits.maxBroadcasts, this.packetBudget(0));
    const address = opts.advertiseAddress ?? this.transport.localAddress;
    if (tryParseAddress(address) === undefined) {
      throw new GossipError('ERR_GOSSIP_BAD_ADDRESS', `invalid advertise address ${JSON.stringify(address)}`);
    }
    const epoch = Math.floor(opts.epoch ?? this.clock.now());
    this.store = new ReplicatedStore(
      this.name,
      epoch,
      {
        maxKeysPerNode: this.limits.maxKeysPerNode,
        maxValueBytes: this.limits.maxValueBytes,
        maxNodes: this.limits.maxMembers,
      },
      () => this.clock.now(),
    );
    const sess = randomBytes(6);
    this.session = sess.readUIntBE(0, 6);
    this.self = {
      name: this.name,
      address,
      incarnation: 0,
      state: 'alive',
      epoch,
      stateChange: this.clock.now(),
      suspicion: undefined,
      idx: 0,
      hash: nameHash(this.name),
    };
    this.table.set(this.name, this.self);
    this.digestHash = this.self.hash;
    this.memberArr.push(this.self);

    this.nameConflicts = new NameConflicts({
      name: this.name,
      address: () => this.self.address,
      check: (addr, done) => this.pingAs(addr, done),
      clock: this.clock,
      logger: this.logger,
    });
    this.broadcastSelfAlive();
    this.transport.onPacket((from, buf) => this.onPacket(from, buf));
    this.transport.onStream((from, req, reply) => this.onStream(from, req, reply));

    const c = this.config;
    this.every(() => this.probeTick(), () => this.awareness.scale(c.probeInterval), this.random() * c.probeInterval);
    this.every(() => this.gossipTick(), () => c.gossipInterval, this.random() * c.gossipInterval);
    if (c.pushPullInterval > 0) {
      const next = (): number => pushPullScale(c.pushPullInterval, this.table.size);
      this.every(() => this.pushPullTick(), next, this.random() * c.pushPullInterval);
    }
    if (c.reconnectInterval > 0) {
      this.every(() => this.reconnectTick(), () => c.reconnectInterval, c.reconnectInterval);
    }
    const reapEvery = Math.max(1000, Math.min(c.reapAfter, c.tombstoneTtl) / 10);
    this.every(() => this.reapTick(), () => reapEvery, reapEvery);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Public API

  /** Address this node advertises. */
  get address(): string {
    return this.self.address;
  }

  /** Subscribes to an event; returns the unsubscribe function. Listener exceptions are logged, never propagated. */
  on<E extends keyof MemberlistEvents>(event: E, listener: Listener<E>): () => void {
    const list = this.listeners[event] as Array<Listener<E>>;
    list.push(listener);
    return () => {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /**
   * Joins a cluster: a push-pull exchange with every seed (own address skipped), repeated with exponential
   * backoff (joinRetryInitial doubling to joinRetryMax, ±25% jitter) until at least one answers.
   * Resolves with the number of seeds that answered in the successful round (0 when no seed other than
   * ourselves was given). Rejects with ERR_GOSSIP_BAD_ADDRESS, ERR_GOSSIP_JOIN_FAILED (maxAttempts reached) or
   * ERR_GOSSIP_SHUTDOWN.
   */
  join(seeds: readonly string[], opts: JoinOptions = {}): Promise<number> {
    for (const s of seeds) {
      if (tryParseAddress(s) === undefined) {
        return Promise.reject(new GossipError('ERR_GOSSIP_BAD_ADDRESS', `invalid seed ${JSON.stringify(s)}`));
      }
    }
    if (this.closed) return Promise.reject(new GossipError('ERR_GOSSIP_SHUTDOWN', 'memberlist is shut down'));
    const targets = [...new Set(seeds)].filter((s) => s !== this.self.address);
    if (targets.length === 0) return Promise.resolve(0);
    const maxAttempts = opts.maxAttempts ?? Infinity;
    return new Promise<number>((resolve, reject) => {
      let attempt = 0;
      let settled = false;
      const fail = (err: GossipError): void => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      this.pendingJoins.push(fail);
      const round = (): void => {
        if (settled || this.closed) return;
        attempt++;
        let pending = targets.length;
        let ok = 0;
        for (const addr of targets) {
          this.pushPull(addr, true, 0, (success) => {
            if (success) ok++;
            if (--pending > 0 || settled) return;
            if (ok > 0) {
              settled = true;
              this.pendingJoins = this.pendingJoins.filter((f) => f !== fail);
              this.logger.info({ node: this.name, contacted: ok }, 'gossip: joined');
              resolve(ok);
            } else if (attempt >= maxAttempts) {
              this.pendingJoins = this.pendingJoins.filter((f) => f !== fail);
              fail(new GossipError('ERR_GOSSIP_JOIN_FAILED', `no seed answered after ${attempt} attempts`));
            } else {
              const base = Math.min(this.config.joinRetryMax, this.config.joinRetryInitial * 2 ** (attempt - 1));
              const delay = base * (0.75 + 0.5 * this.random());
              this.logger.debug({ node: this.name, attempt, delay }, 'gossip: join attempt failed, retrying');
              this.after(round, delay);
            }
          });
        }
      };
      round();
    });
  }

  /**
   * Leaves gracefully: bumps our incarnation, broadcasts that we left, and resolves once that broadcast was
   * transmitted retransmit-limit times, or after `timeoutMs` (default: profile leaveTimeout), or at once when no
   * other member is alive. Probing and push-pull stop; gossip continues until {@link shutdown}.
   */
  leave(timeoutMs = this.config.leaveTimeout): Promise<void> {
    if (this.closed || this.leaving) return Promise.resolve();
    this.leaving = true;
    this.self.incarnation++;
    this.setState(this.self, 'left');
    this.self.stateChange = this.clock.now();
    const anyoneAlive = this.memberArr.some((m) => m !== this.self && !isGone(m.state));
    return new Promise<void>((resolve) => {
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        this.clock.clearTimeout(timer);
        this.timers.delete(timer);
        resolve();
      };
      const timer = this.after(finish, timeoutMs);
      const msg: DeadMsg = { kind: 'dead', node: this.name, incarnation: this.self.incarnation, from: this.name };
      this.queue.enqueue({ key: memberKey(this.name), msg: encodeMessage(msg), onDone: finish });
      this.emitMember(this.self);
      if (!anyoneAlive) finish();
      else this.gossipTick(); // do not wait for the next tick
    });
  }

  /** Stops all timers, fails pending joins, closes the transport. Idempotent. Does not announce anything. */
  shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    for (const m of this.memberArr) m.suspicion?.cancel();
    this.ackHandlers.clear();
    const joins = this.pendingJoins;
    this.pendingJoins = [];
    for (const f of joins) f(new GossipError('ERR_GOSSIP_SHUTDOWN', 'memberlist shut down during join'));
    this.transport.close();
  }

  /** Sets one of this node's keys and disseminates it. @throws GossipError (key/value caps) */
  setLocal(key: string, value: Uint8Array | string): void {
    const { msg, change } = this.store.setLocal(key, value);
    this.broadcastKv(msg);
    this.emitChanges([change]);
  }

  /** Deletes one of this node's keys (tombstone) and disseminates it. Returns false if the key did not exist. */
  deleteLocal(key: string): boolean {
    const r = this.store.deleteLocal(key);
    if (r === undefined) return false;
    this.broadcastKv(r.msg);
    this.emitChanges([r.change]);
    return true;
  }

  /** One of this node's own values. */
  getLocal(key: string): Uint8Array | undefined {
    return this.store.getLocal(key);
  }

  /** Live keys of every visible node (alive or suspect members, and ourselves), by node name. A fresh copy. */
  view(): Map<string, Map<string, Uint8Array>> {
    return this.store.view();
  }

  /** Live keys of one visible node (alive or suspect member, or ourselves), or undefined. A fresh copy. */
  nodeView(node: string): Map<string, Uint8Array> | undefined {
    return this.store.nodeView(node);
  }

  /** All known members, ourselves included. */
  members(): MemberInfo[] {
    return this.memberArr.map((m) => ({ name: m.name, address: m.address, state: m.state, incarnation: m.incarnation }));
  }

  /** Live nodes that use this node's name from another address (conflicts.ts): each is also logged, as an error, by
   * both nodes. Empty when names are unique. */
  conflicts(): NameConflict[] {
    return this.nameConflicts.list();
  }

  /** One member, or undefined. */
  member(name: string): MemberInfo | undefined {
    const m = this.table.get(name);
    return m === undefined ? undefined : { name: m.name, address: m.address, state: m.state, incarnation: m.incarnation };
  }

  /** Number of members in state alive (ourselves included, unless we left). */
  numAlive(): number {
    let n = 0;
    for (const m of this.memberArr) if (m.state === 'alive') n++;
    return n;
  }

  /** Lifeguard local health score (0 = healthy, up to awarenessMaxMultiplier − 1). */
  health(): number {
    return this.awareness.health;
  }

  /** Replaces the keyring at runtime (rotation). Passing undefined is refused: encryption cannot be turned off live. */
  setKeyring(keys: readonly Uint8Array[]): void {
    this.keyring = new Keyring(keys);
    this.peerKey.clear();
  }

  /** Counters snapshot. */
  stats(): GossipStats {
    const c = this.counters;
    const members: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
    for (const m of this.memberArr) members[m.state]++;
    return {
      packets: { ...c.packets },
      streams: { ...c.streams },
      messages: {
        sent: { ...c.msgSent },
        received: { ...c.msgReceived },
        bytesSent: { ...c.msgBytesSent },
        bytesReceived: { ...c.msgBytesReceived },
      },
      dropped: { ...c.dropped },
      unknownMessages: c.unknownMessages,
      capped: { ...c.capped, broadcasts: c.capped.broadcasts + this.queue.evicted },
      members,
      broadcastQueue: this.queue.size,
      health: this.awareness.health,
      store: this.store.counts(),
      protocol: { ...c.protocol },
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Timers

  private after(fn: () => void, ms: number): TimerHandle {
    const h = this.clock.setTimeout(() => {
      this.timers.delete(h);
      if (this.closed) return;
      this.guard('timer', fn);
    }, ms);
    this.timers.add(h);
    return h;
  }

  private every(fn: () => void, interval: () => number, first: number): void {
    const tick = (): void => {
      this.after(tick, interval());
      fn();
    };
    this.after(tick, first);
  }

  private cancel(h: TimerHandle | undefined): void {
    if (h === undefined) return;
    this.clock.clearTimeout(h);
    this.timers.delete(h);
  }

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.counters.dropped['handler-error']++;
      this.warnLimited.warn(`error:${what}`, { node: this.name, err: String(e), stack: (e as Error)?.stack }, 'gossip: internal error');
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Sending

  private packetBudget(primaryBytes: number): number {
    return this.limits.maxPacketSize - envelopeOverhead(true) - REPLAY_HEADER_BYTES - primaryBytes;
  }

  private keyFor(addr: string): number {
    return this.peerKey.get(addr) ?? 0;
  }

  private buildBody(parts: readonly Uint8Array[]): Uint8Array {
    let len = REPLAY_HEADER_BYTES;
    for (const p of parts) len += p.length;
    const body = new Uint8Array(len);
    writeReplayHeader(body, { session: this.session, timestamp: this.clock.now(), seq: this.packetSeq });
    this.packetSeq = (this.packetSeq + 1) >>> 0;
    let off = REPLAY_HEADER_BYTES;
    for (const p of parts) {
      body.set(p, off);
      off += p.length;
    }
    return body;
  }

  private countSent(parts: readonly Uint8Array[]): void {
    for (const p of parts) {
      const kind = MESSAGE_KINDS[p[0]! - 1];
      if (kind !== undefined) {
        this.counters.msgSent[kind]++;
        this.counters.msgBytesSent[kind] += p.length;
      }
    }
  }

  /**
   * Sends `primary` messages to `addr` in one datagram, filling the rest with pending broadcasts. Datagrams are
   * packed by their *compressed* size: gossip compresses several-fold, so a 1400-byte datagram can carry far more
   * than 1400 bytes of messages, which cuts packet count (and compression calls) during rumour storms.
   */
  private send(addr: string, primary: readonly Uint8Array[], piggyback = true): void {
    if (this.closed) return;
    let used = 0;
    for (const p of primary) used += p.length;
    const budget = this.packetBudget(used);
    const limit = this.retransmitLimit();
    const cands = piggyback && budget > 0 ? this.queue.peek(this.optimisticBudget(budget), limit) : [];
    this.sendPacked(addr, primary, cands, budget, limit);
  }

  /** Uncompressed bytes worth trying in one datagram when compression is on. */
  private optimisticBudget(budget: number): number {
    return this.config.compressThreshold > 0 ? budget * 4 : budget;
  }

  /** Sends primary + the longest prefix of `cands` that fits one datagram, and commits that prefix. */
  private sendPacked(
    addr: string,
    primary: readonly Uint8Array[],
    cands: readonly Pending[],
    budget: number,
    limit: number,
  ): void {
    const encrypted = this.keyring !== undefined;
    const max = this.limits.maxPacketSize;
    let count = cands.length;
    let body: Uint8Array | undefined;
    let prepared: PreparedBody | undefined;
    for (let attempt = 0; attempt < 4; attempt++) {
      const parts = [...primary];
      let raw = 0;
      for (let i = 0; i < count; i++) {
        parts.push(cands[i]!.msg);
        raw += cands[i]!.msg.length;
      }
      body = this.buildBody(parts);
      prepared = prepareBody(body, this.config.compressThreshold);
      const size = sealedSize(prepared, encrypted);
      if (size <= max || count === 0) break;
      if (attempt === 3) {
        prepared = undefined;
        break;
      }
      // Shrink the prefix in proportion to the overshoot, with a margin.
      const ratio = (max - (size - prepared.payload.length)) / prepared.payload.length;
      const target = Math.max(0, raw * ratio * 0.92);
      let acc = 0;
      let k = 0;
      while (k < count && acc + cands[k]!.msg.length <= target) acc += cands[k++]!.msg.length;
      count = k < count ? k : count - 1;
    }
    if (prepared === undefined) {
      // Fallback that always fits: the uncompressed budget.
      let acc = 0;
      let k = 0;
      while (k < cands.length && acc + cands[k]!.msg.length <= budget) acc += cands[k++]!.msg.length;
      count = k;
      const parts = [...primary, ...cands.slice(0, count).map((c) => c.msg)];
      body = this.buildBody(parts);
      prepared = prepareBody(body, this.config.compressThreshold);
    }
    const sent = cands.slice(0, count);
    this.queue.commit(sent, limit);
    const buf = finishEnvelope(prepared, this.keyring, this.keyFor(addr));
    this.countSent(primary);
    this.countSent(sent.map((c) => c.msg));
    this.counters.packets.sent++;
    this.counters.packets.bytesSent += buf.length;
    this.transport.sendPacket(addr, buf);
  }

  private retransmitLimit(): number {
    return retransmitLimit(this.config.retransmitMult, this.table.size);
  }

  /** Queues `msg` for dissemination; `raw` (the bytes it arrived as) avoids re-encoding a relayed rumour. */
  private broadcast(key: string, msg: Message, raw?: Uint8Array): void {
    if (this.quiet > 0) return;
    this.queue.enqueue({ key, msg: raw ?? encodeMessage(msg) });
  }

  private broadcastKv(msg: KvMsg, raw?: Uint8Array): void {
    this.broadcast(kvKey(msg.node, msg.key), msg, raw);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Receiving

  private drop(reason: DropReason, from: string, detail?: string): void {
    this.counters.dropped[reason]++;
    const hint = KEY_HINTS[reason];
    this.warnLimited.warn(`drop:${reason}`, { node: this.name, from, reason, detail, ...(hint ? { hint } : {}) }, 'gossip: dropped packet');
  }

  private capped(what: CapReason, detail: string): void {
    this.counters.capped[what]++;
    this.warnLimited.warn(`cap:${what}`, { node: this.name, cap: what, detail }, 'gossip: cap reached');
  }

  private onPacket(from: string, buf: Uint8Array): void {
    if (this.closed) return;
    this.counters.packets.received++;
    this.counters.packets.bytesReceived += buf.length;
    if (buf.length > this.limits.maxPacketSize) return this.drop('oversized', from, `${buf.length} bytes`);
    const opened = openEnvelope(buf, this.keyring, 64 * 1024);
    if (!opened.ok) return this.drop(opened.reason, from);
    if (this.replayOn) {
      const v = this.packetGuard.check(opened.header, this.clock.now());
      if (v !== 'ok') return this.drop(v, from);
    }
    let messages: Message[];
    let raws: Uint8Array[];
    try {
      const d = decodeMessages(opened.body, this.decodeLimits);
      messages = d.messages;
      raws = d.raws;
      this.counters.unknownMessages += d.unknown;
    } catch (e) {
      if (e instanceof DecodeError) return this.drop(e.reason, from, e.message);
      return this.drop('malformed', from, String(e));
    }
    if (opened.encrypted) {
      if (opened.keyIndex > 0) this.peerKey.set(from, opened.keyIndex);
      else this.peerKey.delete(from);
      if (this.peerKey.size > 2 * this.limits.maxMembers) this.peerKey.clear();
    }
    this.guard('packet', () => {
      // Pings last: the ack then piggybacks whatever the rest of the packet made us broadcast (a refutation of the
      // buddy suspicion that rode with the ping, above all).
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i]!;
        if (m.kind === 'ping') continue;
        this.countReceived(m, raws[i]!.length);
        this.handleMessage(from, m, raws[i]!);
      }
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i]!;
        if (m.kind !== 'ping') continue;
        this.countReceived(m, raws[i]!.length);
        this.handleMessage(from, m, raws[i]!);
      }
    });
  }

  private countReceived(m: Message, bytes: number): void {
    this.counters.msgReceived[m.kind]++;
    this.counters.msgBytesReceived[m.kind] += bytes;
  }

  private handleMessage(from: string, m: Message, raw?: Uint8Array): void {
    if (raw !== undefined && this.isPendingDuplicate(m, raw)) return;
    switch (m.kind) {
      case 'ping':
        if (m.target !== '' && m.target !== this.name) return this.drop('wrong-target', from, m.target);
        this.send(from, [encodeMessage({ kind: 'ack', seq: m.seq, digest: this.digest() })]);
        return;
      case 'indirectPing':
        return this.handleIndirectPing(from, m.seq, m.target, m.targetAddr, m.wantNack);
      case 'ack':
        this.ackHandlers.get(m.seq)?.onAck(m.digest);
        return;
      case 'nack':
        this.ackHandlers.get(m.seq)?.onNack();
        return;
      case 'alive':
        return this.onAlive(m, raw);
      case 'suspect':
        return this.onSuspect(m, raw);
      case 'dead':
        return this.onDead(m, raw);
      case 'kv':
        return this.onKv(m, raw);
      case 'pushPull':
        return this.drop('unexpected-message', from, 'pushPull over datagram');
    }
  }

  /** Our membership digest (alive + suspect members, ourselves included). Maintained incrementally. */
  private digest(): Digest {
    return { count: this.digestCount, hash: this.digestHash >>> 0, store: this.store.hash };
  }

  private digestCount = 1;
  private digestHash = 0;

  /** Moves a member in or out of the digest when its state changes between live and gone. */
  private setState(m: Member, state: MemberState): void {
    const wasLive = !isGone(m.state);
    const isLive = !isGone(state);
    if (wasLive !== isLive) {
      this.digestCount += isLive ? 1 : -1;
      this.digestHash ^= m.hash;
    }
    if (state === 'suspect' && m !== this.self) this.suspects.add(m);
    else this.suspects.delete(m);
    m.state = state;
  }

  /** After a direct probe: pull full state from a member whose digest differs, when we are quiescent. */
  private checkDigest(target: Member, remote: Digest | undefined): void {
    if (remote === undefined || this.config.digestSyncInterval <= 0 || this.leaving) return;
    const mine = this.digest();
    if (remote.count === mine.count && remote.hash === mine.hash && remote.store === mine.store) return;
    const now = this.clock.now();
    if (this.queue.size > 0 || now - this.lastDigestSync < this.config.digestSyncInterval) return;
    this.lastDigestSync = now;
    this.counters.protocol.digestSyncs++;
    this.pushPull(target.address, false, this.keyFor(target.address), () => {});
  }

  /** A rumour identical to one we are still spreading: count it as a transmission and skip it. */
  private isPendingDuplicate(m: Message, raw: Uint8Array): boolean {
    switch (m.kind) {
      case 'alive':
      case 'suspect':
      case 'dead':
        return this.queue.sawDuplicate(memberKey(m.node), raw, this.retransmitLimit());
      case 'kv':
        return this.queue.sawDuplicate(kvKey(m.node, m.key), raw, this.retransmitLimit());
      default:
        return false;
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Failure detection

  private nextProbeTarget(): Member | undefined {
    for (let i = 0; i <= this.probeOrder.length; i++) {
      if (this.probeIndex >= this.probeOrder.length) {
        this.probeOrder = shuffle(
          this.random,
          this.memberArr.filter((m) => m !== this.self).map((m) => m.name),
        );
        this.probeIndex = 0;
        if (this.probeOrder.length === 0) return undefined;
      }
      const m = this.table.get(this.probeOrder[this.probeIndex++]!);
      if (m !== undefined && m !== this.self && !isGone(m.state)) return m;
    }
    return undefined;
  }

  private nextSeq(): number {
    this.probeSeq = (this.probeSeq + 1) >>> 0;
    return this.probeSeq;
  }

  private probeTick(): void {
    if (this.leaving) return;
    const target = this.nextProbeTarget();
    if (target !== undefined) this.probe(target);
    this.pingSuspects(target);
    this.nameConflicts.tick();
  }

  /** Pings `address` naming our own name: only a live process with our name answers (pings naming another are
   * dropped). `done(true)` on its ack, `done(false)` after a probe interval without one. */
  private pingAs(address: string, done: (answered: boolean) => void): void {
    const seq = this.nextSeq();
    let over = false;
    let timer: TimerHandle | undefined;
    const finish = (answered: boolean): void => {
      if (over) return;
      over = true;
      this.ackHandlers.delete(seq);
      this.cancel(timer);
      done(answered);
    };
    this.ackHandlers.set(seq, { onAck: () => finish(true), onNack: () => {} });
    timer = this.after(() => finish(false), this.awareness.scale(this.config.probeInterval));
    this.send(address, [encodeMessage({ kind: 'ping', seq, target: this.name })]);
  }

  /**
   * Buddy pings: every probe tick, a direct ping carrying the suspicion goes to up to {@link SUSPECT_PINGS}
   * current suspects (rotating). The suspect learns it is accused and refutes; its ack piggybacks the refutation
   * back to us even if we missed the rumour. Fire-and-forget: no indirect probes, no health or suspicion effect
   * (the regular probe handles those). Without this, a member that misses one refutation rumour (retransmit limit
   * 4 in small clusters, plus loss) declares a live member dead.
   */
  private pingSuspects(skip: Member | undefined): void {
    let sent = 0;
    for (const m of [...this.suspects]) {
      if (sent >= SUSPECT_PINGS) break;
      if (m === skip) continue;
      this.suspects.delete(m); // rotate: re-insert at the end
      if (m.state !== 'suspect' || this.table.get(m.name) !== m) continue;
      this.suspects.add(m);
      sent++;
      this.send(m.address, [
        encodeMessage({ kind: 'ping', seq: this.nextSeq(), target: m.name }),
        encodeMessage({ kind: 'suspect', node: m.name, incarnation: m.incarnation, from: this.name }),
      ]);
    }
  }

  private probe(target: Member): void {
    this.counters.protocol.probes++;
    const seq = this.nextSeq();
    const incarnation = target.incarnation;
    const timeout = this.awareness.scale(this.config.probeTimeout);
    const deadline = this.awareness.scale(this.config.probeInterval);
    let done = false;
    let expectedNacks = 0;
    let nacks = 0;
    const finish = (): void => {
      done = true;
      this.ackHandlers.delete(seq);
      this.cancel(indirectTimer);
      this.cancel(deadlineTimer);
    };
    this.ackHandlers.set(seq, {
      onAck: (digest) => {
        if (done) return;
        finish();
        this.awareness.apply(-1);
        this.checkDigest(target, digest);
      },
      onNack: () => {
        nacks++;
      },
    });
    const primary = [encodeMessage({ kind: 'ping', seq, target: target.name })];
    if (target.state === 'suspect') {
      // Buddy system: tell the suspect directly so it can refute at once.
      primary.push(encodeMessage({ kind: 'suspect', node: target.name, incarnation: target.incarnation, from: this.name }));
    }
    this.send(target.address, primary);
    const indirectTimer = this.after(() => {
      if (done) return;
      const helpers = pickRandom(
        this.random,
        this.memberArr,
        this.config.indirectChecks,
        (m) => m !== this.self && m !== target && m.state === 'alive',
      );
      const req = encodeMessage({
        kind: 'indirectPing',
        seq,
        target: target.name,
        targetAddr: target.address,
        wantNack: true,
      });
      for (const h of helpers) {
        expectedNacks++;
        this.send(h.address, [req]);
      }
    }, timeout);
    const deadlineTimer = this.after(() => {
      if (done) return;
      finish();
      this.counters.protocol.probeFailures++;
      // Lifeguard: missing nacks mean *we* may be the problem; without helpers, any failure counts against us.
      this.awareness.apply(expectedNacks > 0 ? expectedNacks - Math.min(nacks, expectedNacks) : 1);
      const cur = this.table.get(target.name);
      if (cur === undefined || cur !== target) return;
      this.onSuspect({ kind: 'suspect', node: target.name, incarnation, from: this.name });
    }, deadline);
  }

  private handleIndirectPing(from: string, origSeq: number, target: string, targetAddr: string, wantNack: boolean): void {
    if (tryParseAddress(targetAddr) === undefined) return this.drop('malformed', from, 'indirect ping address');
    if (this.relays >= this.limits.maxRelays) return this.capped('relays', from);
    this.relays++;
    const seq = this.nextSeq();
    let done = false;
    const finish = (): void => {
      done = true;
      this.relays--;
      this.ackHandlers.delete(seq);
      this.cancel(timer);
    };
    this.ackHandlers.set(seq, {
      onAck: () => {
        if (done) return;
        finish();
        this.send(from, [encodeMessage({ kind: 'ack', seq: origSeq })]);
      },
      onNack: () => {},
    });
    this.send(targetAddr, [encodeMessage({ kind: 'ping', seq, target })]);
    const timer = this.after(() => {
      if (done) return;
      finish();
      if (wantNack) this.send(from, [encodeMessage({ kind: 'nack', seq: origSeq })]);
    }, this.config.probeTimeout);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Membership state machine

  private refute(accused: number): void {
    if (this.leaving) return;
    this.self.incarnation = Math.max(this.self.incarnation, accused) + 1;
    this.awareness.apply(1);
    this.counters.protocol.refutations++;
    this.broadcastSelfAlive();
  }

  /**
   * Someone still accuses an older incarnation of ours: they missed our refutation. Spread our current alive again
   * (no incarnation bump needed). Not counted as a refutation and no health penalty.
   */
  private reannounce(): void {
    if (this.leaving || this.queue.has(memberKey(this.name))) return;
    this.broadcastSelfAlive();
  }

  private broadcastSelfAlive(): void {
    const msg: AliveMsg = {
      kind: 'alive',
      node: this.name,
      addr: this.self.address,
      incarnation: this.self.incarnation,
      epoch: this.store.epoch,
    };
    this.queue.enqueue({ key: memberKey(this.name), msg: encodeMessage(msg) });
  }

  private addMember(name: string, address: string): Member | undefined {
    if (this.table.size >= this.limits.maxMembers) {
      this.capped('members', name);
      return undefined;
    }
    const m: Member = {
      name,
      address,
      incarnation: 0,
      state: 'dead',
      epoch: 0,
      stateChange: this.clock.now(),
      suspicion: undefined,
      idx: this.memberArr.length,
      hash: nameHash(name),
    };
    this.table.set(name, m);
    this.memberArr.push(m);
    // Random position in the probe order, so a new member is not probed by everyone at the same moment.
    this.probeOrder.push(name);
    const j = randomInt(this.random, this.probeOrder.length);
    const last = this.probeOrder.length - 1;
    [this.probeOrder[j], this.probeOrder[last]] = [this.probeOrder[last]!, this.probeOrder[j]!];
    return m;
  }

  private onAlive(a: AliveMsg, raw?: Uint8Array): void {
    let m = this.table.get(a.node);
    // Fast path: the most common rumour is one we already have.
    if (m !== undefined && m !== this.self && a.incarnation < m.incarnation) return;
    if (m === undefined || a.addr !== m.address) {
      if (tryParseAddress(a.addr) === undefined) return this.drop('malformed', a.node, 'alive address');
    }
    if (a.node === this.name) {
      if (this.leaving) return;
      // another address: an old rumour of a previous process of ours, or a live node with our name (checked by a
      // ping; a known one is not refuted: see conflicts.ts)
      if (a.addr !== this.self.address && this.nameConflicts.heard(a.addr)) return;
      if (a.epoch > this.store.epoch) {
        // An older process of ours ran with a clock ahead of ours: take an epoch above it so our keys win.
        this.broadcastReissues(this.store.supersedeEpoch(a.epoch));
        this.self.epoch = this.store.epoch;
      }
      const other = a.addr !== this.self.address || a.epoch !== this.store.epoch;
      if (a.incarnation > this.self.incarnation || (a.incarnation === this.self.incarnation && other)) {
        this.refute(a.incarnation);
      }
      return;
    }
    let isNew = false;
    if (m === undefined) {
      m = this.addMember(a.node, a.addr);
      if (m === undefined) return;
      isNew = true;
    } else if (a.incarnation <= m.incarnation) {
      return;
    }
    const prevState = m.state;
    const prevAddr = m.address;
    m.suspicion?.cancel();
    m.suspicion = undefined;
    m.incarnation = a.incarnation;
    m.address = a.addr;
    m.epoch = a.epoch;
    if (prevState !== 'alive' || isNew) m.stateChange = this.clock.now();
    this.setState(m, 'alive');
    this.broadcast(memberKey(a.node), a, raw);
    const changes = this.store.noteEpoch(a.node, a.epoch);
    changes.push(...this.store.setVisible(a.node, true));
    if (isNew || prevState !== 'alive' || prevAddr !== a.addr) this.emitMember(m);
    this.emitChanges(changes);
  }

  private onSuspect(s: SuspectMsg, raw?: Uint8Array): void {
    const m = this.table.get(s.node);
    if (m === undefined) return;
    if (s.incarnation < m.incarnation) {
      if (m === this.self) this.reannounce();
      return;
    }
    if (m.state === 'suspect' && m.suspicion !== undefined) {
      if (m.suspicion.confirm(s.from)) this.broadcast(memberKey(s.node), s, raw);
      return;
    }
    if (isGone(m.state)) return;
    if (m === this.self) {
      this.refute(s.incarnation);
      return;
    }
    if (s.from === this.name) this.counters.protocol.suspicionsRaised++;
    m.incarnation = s.incarnation;
    this.setState(m, 'suspect');
    m.stateChange = this.clock.now();
    this.broadcast(memberKey(s.node), s, raw);
    const n = this.table.size;
    let k = this.config.suspicionMult - 2;
    if (n - 2 < k) k = 0;
    const min = suspicionTimeout(this.config.suspicionMult, n, this.config.probeInterval);
    const max = this.config.suspicionMaxTimeoutMult * min;
    const inc = s.incarnation;
    m.suspicion = new Suspicion(this.clock, s.from, k, min, max, () => {
      if (this.closed) return;
      this.guard('suspicion', () => {
        const cur = this.table.get(s.node);
        if (cur !== m || m.state !== 'suspect' || m.incarnation !== inc) return;
        this.counters.protocol.declaredDead++;
        this.logger.info({ node: this.name, member: m.name, incarnation: inc }, 'gossip: member declared dead');
        this.onDead({ kind: 'dead', node: m.name, incarnation: inc, from: this.name });
      });
    });
    this.emitMember(m);
  }

  private onDead(d: DeadMsg, raw?: Uint8Array): void {
    const m = this.table.get(d.node);
    if (m === undefined) return;
    if (d.incarnation < m.incarnation) {
      if (m === this.self) this.reannounce();
      return;
    }
    if (isGone(m.state)) return;
    if (m === this.self) {
      if (!this.leaving) this.refute(d.incarnation);
      return;
    }
    m.suspicion?.cancel();
    m.suspicion = undefined;
    m.incarnation = d.incarnation;
    this.setState(m, d.from === d.node ? 'left' : 'dead');
    m.stateChange = this.clock.now();
    this.broadcast(memberKey(d.node), d, raw);
    this.emitMember(m);
    this.emitChanges(this.store.setVisible(d.node, false));
  }

  private onKv(m: KvMsg, raw?: Uint8Array): void {
    // our name's keys from another live node with our name: answering them (reissuing ours over theirs) starts a war
    // of versions that never ends; the conflict is reported instead (conflicts.ts)
    if (m.node === this.name && this.nameConflicts.active) return;
    const r = this.store.apply(m.node, m.epoch, m.version, m.key, m.value);
    switch (r.result) {
      case 'applied':
        this.broadcastKv(m, raw);
        this.emitChanges(r.changes);
        return;
      case 'self-conflict':
        this.broadcastReissues(r.reissue);
        return;
      case 'rejected-cap':
        this.capped(m.value !== null && m.value.length > this.limits.maxValueBytes ? 'values' : 'keys', m.node);
        return;
      case 'stale':
        return;
    }
  }

  private broadcastReissues(msgs: readonly KvMsg[]): void {
    for (const msg of msgs) {
      this.queue.enqueue({ key: kvKey(msg.node, msg.key), msg: encodeMessage(msg) });
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Gossip, push-pull, reaping

  private gossipTick(): void {
    const now = this.clock.now();
    const dead = this.config.gossipToTheDeadTime;
    const targets = pickRandom(
      this.random,
      this.memberArr,
      this.config.gossipNodes,
      (m) => m !== this.self && (!isGone(m.state) || now - m.stateChange < dead),
    );
    const limit = this.retransmitLimit();
    const budget = this.packetBudget(0);
    for (const t of targets) {
      const cands = this.queue.peek(this.optimisticBudget(budget), limit);
      if (cands.length === 0) break;
      this.sendPacked(t.address, [], cands, budget, limit);
    }
    const large = this.queue.takeLarge(limit);
    if (large !== undefined) {
      const [t] = pickRandom(this.random, this.memberArr, 1, (m) => m !== this.self && m.state === 'alive');
      if (t !== undefined) this.streamSend(t.address, large);
    }
  }

  /** Sends one oversized broadcast over the stream channel (response ignored). */
  private streamSend(addr: string, msg: Uint8Array): void {
    const keyIndex = this.keyFor(addr);
    const frame = sealEnvelope(this.buildBody([msg]), {
      keyring: this.keyring,
      keyIndex,
      compressThreshold: this.config.compressThreshold,
    });
    this.countSent([msg]);
    this.counters.streams.sent++;
    this.counters.streams.bytesSent += frame.length;
    this.transport.request(addr, frame, this.config.streamTimeout, (err) => {
      if (err !== undefined) this.counters.streams.failed++;
    });
  }

  private pushPullTick(): void {
    if (this.leaving) return;
    const [t] = pickRandom(this.random, this.memberArr, 1, (m) => m !== this.self && m.state === 'alive');
    if (t !== undefined) this.pushPull(t.address, false, this.keyFor(t.address), () => {});
  }

  private reconnectTick(): void {
    if (this.leaving) return;
    const [t] = pickRandom(this.random, this.memberArr, 1, (m) => m.state === 'dead');
    if (t !== undefined) this.pushPull(t.address, false, this.keyFor(t.address), () => {});
  }

  private reapTick(): void {
    const now = this.clock.now();
    for (let i = this.memberArr.length - 1; i >= 0; i--) {
      const m = this.memberArr[i]!;
      if (m === this.self || !isGone(m.state) || now - m.stateChange <= this.config.reapAfter) continue;
      this.table.delete(m.name);
      const last = this.memberArr.pop()!;
      if (last !== m) {
        this.memberArr[m.idx] = last;
        last.idx = m.idx;
      }
      this.emitChanges(this.store.drop(m.name));
      this.queue.invalidate(memberKey(m.name));
    }
    this.store.expireTombstones(this.config.tombstoneTtl);
  }

  /** Encodes our full state as a push-pull message under the stream size cap (members first, then stores). */
  private encodePushPull(join: boolean): Uint8Array {
    const cap = this.limits.maxStreamBytes - envelopeOverhead(true) - REPLAY_HEADER_BYTES - 16;
    const w = new Writer(4096);
    w.u8(join ? 1 : 0);
    const rows: MemberRecord[] = this.memberArr.map((m) => ({
      name: m.name,
      addr: m.address,
      incarnation: m.incarnation,
      state: m.state,
      epoch: m === this.self ? this.store.epoch : m.epoch,
    }));
    w.varint(rows.length);
    for (const r of rows) writeMemberRecord(w, r);
    // Store sections: ours first, then the others in random order until the cap (partial anti-entropy still
    // converges over rounds because the order differs each time).
    const others = shuffle(this.random, this.store.nodeNames().filter((n) => n !== this.name));
    const sections = new Writer(4096);
    let count = 0;
    for (const node of [this.name, ...others]) {
      const rec = this.store.record(node);
      // Empty sections carry nothing the member rows (which hold the epoch) do not.
      if (rec === undefined || (rec.entries.length === 0 && node !== this.name)) continue;
      const before = sections.length;
      writeStoreRecord(sections, rec);
      if (w.length + sections.length + 8 > cap) {
        sections.truncate(before);
        break;
      }
      count++;
    }
    w.varint(count);
    w.bytes(sections.finish());
    return frameMessage('pushPull', w.finish());
  }

  private pushPull(addr: string, join: boolean, keyIndex: number, cb: (ok: boolean) => void): void {
    if (this.closed) return cb(false);
    const msg = this.encodePushPull(join);
    const frame = sealEnvelope(this.buildBody([msg]), {
      keyring: this.keyring,
      keyIndex,
      compressThreshold: this.config.compressThreshold,
    });
    this.countSent([msg]);
    this.counters.streams.sent++;
    this.counters.streams.bytesSent += frame.length;
    this.transport.request(addr, frame, this.config.streamTimeout, (err, resp) => {
      if (this.closed) return cb(false);
      if (err !== undefined || resp === undefined) {
        this.counters.streams.failed++;
        // Key rotation: a peer that does not know our primary key closes the stream; try our other keys.
        const ring = this.keyring;
        if (ring !== undefined && keyIndex + 1 < ring.size && err?.code === 'ERR_GOSSIP_UNREACHABLE') {
          return this.pushPull(addr, join, keyIndex + 1, cb);
        }
        this.logger.debug({ node: this.name, peer: addr, err: err?.message }, 'gossip: push-pull failed');
        return cb(false);
      }
      this.counters.streams.bytesReceived += resp.length;
      const remote = this.openStreamFrame(addr, resp);
      if (remote === undefined || remote.messages.length !== 1 || remote.messages[0]!.kind !== 'pushPull') {
        if (remote !== undefined) this.drop('unexpected-message', addr, 'push-pull response');
        return cb(false);
      }
      if (remote.encrypted && remote.keyIndex > 0) this.peerKey.set(addr, remote.keyIndex);
      this.guard('push-pull', () => this.mergeRemote(remote.messages[0] as PushPullMsg, join));
      cb(true);
    });
  }

  private openStreamFrame(
    from: string,
    buf: Uint8Array,
  ): { messages: Message[]; keyIndex: number; encrypted: boolean } | undefined {
    if (buf.length > this.limits.maxStreamBytes) {
      this.drop('oversized', from, `${buf.length} byte frame`);
      return undefined;
    }
    const opened = openEnvelope(buf, this.keyring, this.limits.maxStreamBytes);
    if (!opened.ok) {
      this.drop(opened.reason, from);
      return undefined;
    }
    if (this.replayOn) {
      const v = this.streamGuard.check(opened.header, this.clock.now());
      if (v !== 'ok') {
        this.drop(v, from);
        return undefined;
      }
    }
    try {
      const d = decodeMessages(opened.body, this.decodeLimits);
      this.counters.unknownMessages += d.unknown;
      for (let i = 0; i < d.messages.length; i++) this.countReceived(d.messages[i]!, d.raws[i]!.length);
      return { messages: d.messages, keyIndex: opened.keyIndex, encrypted: opened.encrypted };
    } catch (e) {
      this.drop(e instanceof DecodeError ? e.reason : 'malformed', from, String(e));
      return undefined;
    }
  }

  private onStream(from: string, req: Uint8Array, reply: (resp: Uint8Array | undefined) => void): void {
    if (this.closed) return reply(undefined);
    this.counters.streams.received++;
    this.counters.streams.bytesReceived += req.length;
    if (this.inboundStreams >= this.limits.maxInboundStreams) {
      this.capped('streams', from);
      return reply(undefined);
    }
    this.inboundStreams++;
    try {
      const remote = this.openStreamFrame(from, req);
      if (remote === undefined) return reply(undefined);
      const keyIndex = remote.encrypted ? remote.keyIndex : 0;
      const pp = remote.messages.find((m): m is PushPullMsg => m.kind === 'pushPull');
      if (pp !== undefined) {
        if (this.leaving) return reply(undefined);
        const resp = this.encodePushPull(false);
        this.guard('push-pull', () => this.mergeRemote(pp, false));
        const frame = sealEnvelope(this.buildBody([resp]), {
          keyring: this.keyring,
          keyIndex,
          compressThreshold: this.config.compressThreshold,
        });
        this.countSent([resp]);
        this.counters.streams.bytesSent += frame.length;
        return reply(frame);
      }
      // Oversized broadcasts (kv) and any other gossip that came over the stream.
      this.guard('stream', () => {
        for (const m of remote.messages) {
          if (m.kind === 'kv' || m.kind === 'alive' || m.kind === 'suspect' || m.kind === 'dead') {
            this.handleMessage(from, m);
          } else {
            this.drop('unexpected-message', from, `${m.kind} over stream`);
          }
        }
      });
      reply(sealEnvelope(this.buildBody([]), { keyring: this.keyring, keyIndex, compressThreshold: 0 }));
    } finally {
      this.inboundStreams--;
    }
  }

  /**
   * Merges a remote full state. Remote 'dead' and 'suspect' become suspicions (the member gets a chance to refute),
   * 'left' is taken as is. When `quiet` (our own join), what we learn is not re-broadcast: the cluster knows it.
   */
  private mergeRemote(pp: PushPullMsg, quiet: boolean): void {
    if (quiet) this.quiet++;
    try {
      for (const r of pp.members) {
        if (!validShortString(r.name)) continue;
        switch (r.state) {
          case 'alive':
            this.onAlive({ kind: 'alive', node: r.name, addr: r.addr, incarnation: r.incarnation, epoch: r.epoch });
            break;
          case 'left':
            this.onDead({ kind: 'dead', node: r.name, incarnation: r.incarnation, from: r.name });
            break;
          case 'dead':
          case 'suspect':
            this.onSuspect({ kind: 'suspect', node: r.name, incarnation: r.incarnation, from: this.name });
            break;
        }
      }
      for (const s of pp.stores) {
        if (s.node === this.name) {
          if (this.nameConflicts.active) continue; /* as in onKv */
          if (s.epoch > this.store.epoch) {
            this.broadcastReissues(this.store.supersedeEpoch(s.epoch));
            this.self.epoch = this.store.epoch;
            if (!this.leaving) {
              this.self.incarnation++;
              this.broadcastSelfAlive();
            }
            continue;
          }
        } else {
          this.emitChanges(this.store.noteEpoch(s.node, s.epoch));
        }
        for (const e of s.entries) {
          const r = this.store.apply(s.node, s.epoch, e.version, e.key, e.value);
          if (r.result === 'applied') {
            if (!quiet) {
              this.broadcastKv({ kind: 'kv', node: s.node, epoch: s.epoch, version: e.version, key: e.key, value: e.value });
            }
            this.emitChanges(r.changes);
          } else if (r.result === 'self-conflict') {
            this.broadcastReissues(r.reissue);
          } else if (r.result === 'rejected-cap') {
            this.capped('keys', s.node);
          }
        }
      }
    } finally {
      if (quiet) this.quiet--;
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Events

  private emitMember(m: Member): void {
    const ev: MemberEvent = { name: m.name, address: m.address, state: m.state, incarnation: m.incarnation };
    for (const l of [...this.listeners.member]) {
      try {
        l(ev);
      } catch (e) {
        this.warnLimited.warn('listener', { node: this.name, err: String(e) }, 'gossip: member listener threw');
      }
    }
  }

  private emitChanges(changes: readonly StoreChange[]): void {
    if (changes.length === 0) return;
    for (const ch of changes) {
      const ev: ChangeEvent = { node: ch.node, key: ch.key, value: ch.value };
      for (const l of [...this.listeners.change]) {
        try {
          l(ev);
        } catch (e) {
          this.warnLimited.warn('listener', { node: this.name, err: String(e) }, 'gossip: change listener threw');
        }
      }
    }
  }
}
