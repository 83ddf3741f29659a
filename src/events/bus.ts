/** The event bus: every decision of the daemon as an AppswitchEvent (types.ts), fanned out to subscribers, each with
 * its own bounded queue. Pure (no I/O, no timers); the transports (the HTTP API's /v1/events, the control socket's
 * `events` method) pull from a Subscription.
 *
 * Rules it keeps:
 * - Emitting with nobody subscribed builds nothing: callers check `hasSubscribers` before they build an event, and
 *   emit() itself returns at once.
 * - A subscriber's queue is a ring of `maxBuffered` events (default 1000): when full, the oldest goes and is counted;
 *   the subscriber's next read starts with an `events.lost` event saying how many it missed. A subscriber that never
 *   reads therefore holds at most maxBuffered events, whatever flows.
 * - Filters: `types` keeps those types; `app` keeps events whose client or service is that app (its name, or its app
 *   id, vip or identity), either side of the connection. `events.lost` always passes. */
import { type AppswitchEvent, EVENT_TYPES, type EventSource, type EventType, type SubscribeOptions, type Subscription } from './types.js';

export const DEFAULT_MAX_BUFFERED = 1000;
/** The largest queue a subscriber may ask for. */
export const MAX_BUFFERED_LIMIT = 100_000;


export function isEventType(v: unknown): v is EventType {
  return typeof v === 'string' && (EVENT_TYPES as readonly string[]).includes(v);
}

/** An event as its producer builds it; the bus adds seq, time and node. */
export type EventBody = Omit<AppswitchEvent, 'seq' | 'time' | 'node'>;

/** Whether `e` concerns the app `app` (a name, app id, vip or identity) on either side. */
export function eventMatchesApp(e: AppswitchEvent, app: string): boolean {
  const c = e.client;
  if (c && (c.name === app || c.app === app || c.identity === app)) return true;
  const s = e.service;
  return !!s && (s.name === app || s.vip === app);
}

class Queue implements Subscription {
  /** The ring: `count` events from `head`. */
  private readonly ring: Array<AppswitchEvent | undefined>;
  private head = 0;
  private count = 0;
  /** Dropped since the last read, and the seq of the last one dropped. */
  private lost = 0;
  private lastLostSeq = 0;
  private closed = false;
  private waiter?: { resolve: (v: AppswitchEvent[]) => void; reject: (e: Error) => void };
  private readonly types?: ReadonlySet<EventType>;

  constructor(
    private readonly bus: EventBus,
    readonly capacity: number,
    private readonly app: string | undefined,
    types: EventType[] | undefined,
  ) {
    this.ring = new Array<AppswitchEvent | undefined>(capacity);
    if (types?.length) this.types = new Set(types);
  }

  /** Takes an event if the filters keep it. */
  offer(e: AppswitchEvent): void {
    if (this.closed) return;
    if (this.types && !this.types.has(e.type)) return;
    if (this.app !== undefined && !eventMatchesApp(e, this.app)) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve([e]);
      return;
    }
    if (this.count === this.capacity) {
      this.lastLostSeq = (this.ring[this.head] as AppswitchEvent).seq;
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.count--;
      this.lost++;
    }
    this.ring[(this.head + this.count) % this.capacity] = e;
    this.count++;
  }

  /** Events queued now: at most the capacity, plus the events.lost that heads them. */
  get buffered(): number {
    return this.count;
  }

  next(): Promise<AppswitchEvent[]> {
    if (this.closed) return Promise.reject(new Error('subscription closed'));
    if (this.waiter) return Promise.reject(new Error('next() called again before the previous read resolved'));
    if (this.count || this.lost) return Promise.resolve(this.drain());
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private drain(): AppswitchEvent[] {
    const out: AppswitchEvent[] = [];
    if (this.lost) {
      out.push(this.bus.lostEvent(this.lost, this.lastLostSeq));
      this.lost = 0;
    }
    for (let i = 0; i < this.count; i++) {
      const at = (this.head + i) % this.capacity;
      out.push(this.ring[at] as AppswitchEvent);
      this.ring[at] = undefined;
    }
    this.head = 0;
    this.count = 0;
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ring.fill(undefined);
    this.count = 0;
    this.bus.unsubscribe(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(new Error('subscription closed'));
  }
}

export class EventBus implements EventSource {
  private readonly subs = new Set<Queue>();
  private seq = 0;
  /** Events emitted (with at least one subscriber) since start. */
  emitted = 0;

  constructor(
    private readonly node: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether anyone listens: check before building an event (emitting costs nothing otherwise). */
  get hasSubscribers(): boolean {
    return this.subs.size > 0;
  }

  get subscribers(): number {
    return this.subs.size;
  }

  /** A new subscriber. `maxBuffered` is clamped to 1..MAX_BUFFERED_LIMIT; an unknown type in `types` is ignored. */
  subscribe(opts: SubscribeOptions = {}): Subscription {
    const n = opts.maxBuffered;
    const cap = n === undefined || !Number.isFinite(n) ? DEFAULT_MAX_BUFFERED : Math.min(MAX_BUFFERED_LIMIT, Math.max(1, Math.floor(n)));
    const types = opts.types?.filter(isEventType);
    const q = new Queue(this, cap, opts.app || undefined, types);
    this.subs.add(q);
    return q;
  }

  unsubscribe(q: Queue): void {
    this.subs.delete(q);
  }

  /** Stamps the event (seq, time, node) and offers it to every subscriber; nothing happens without one. */
  emit(body: EventBody): void {
    if (this.subs.size === 0) return;
    const e = { seq: ++this.seq, time: new Date(this.now()).toISOString(), node: this.node, ...body } as AppswitchEvent;
    this.emitted++;
    for (const q of this.subs) q.offer(e);
  }

  /** The events.lost event a subscriber's read starts with. Its seq is that of the last event it stands for, so the
   * seqs a subscriber sees keep increasing (and a gap before it is explained by it). */
  lostEvent(lost: number, seq: number): AppswitchEvent {
    return { seq, time: new Date(this.now()).toISOString(), node: this.node, type: 'events.lost', lost, detail: `${lost} event(s) dropped: the subscriber read too slowly` };
  }

  /** Ends every subscription (their pending reads reject): the daemon stops. */
  closeAll(): void {
    for (const q of [...this.subs]) q.close();
  }
}
