// Time source for the gossip layer: a Clock interface, the system clock, and a deterministic virtual clock
// (binary heap of timers) used by the in-memory network and the simulator.

/** Opaque handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = { readonly __timer: unique symbol } | object;

/**
 * A source of time and one-shot timers. Every timing decision of the gossip layer goes through this interface so
 * that tests and the simulator can run the protocol on virtual time.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch (virtual clocks start at a fixed, wall-clock-like value). */
  now(): number;
  /** Runs `cb` once after `ms` milliseconds (clamped to ≥ 0). */
  setTimeout(cb: () => void, ms: number): TimerHandle;
  /** Cancels a timer; cancelling an already-fired or unknown timer is a no-op. */
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `Date.now()` and Node timers (unref'd so a forgotten timer never keeps a process alive). */
export const systemClock: Clock = {
  now(): number {
    return Date.now();
  },
  setTimeout(cb: () => void, ms: number): TimerHandle {
    const t = globalThis.setTimeout(cb, Math.max(0, ms));
    t.unref();
    return t;
  },
  clearTimeout(handle: TimerHandle): void {
    globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>);
  },
};

/** One scheduled event in a {@link VirtualClock}. */
interface VEvent {
  at: number;
  /** Events at the same instant run by ascending priority, then by insertion order. */
  prio: number;
  seq: number;
  cb: (() => void) | null;
}

function before(a: VEvent, b: VEvent): boolean {
  if (a.at !== b.at) return a.at < b.at;
  if (a.prio !== b.prio) return a.prio < b.prio;
  return a.seq < b.seq;
}

/**
 * A deterministic clock: time moves only when {@link advance} / {@link runUntil} is called, and events fire in
 * (time, priority, insertion) order. Cancelled events stay in the heap with a null callback and are skipped, which
 * keeps cancel O(1).
 */
export class VirtualClock implements Clock {
  private heap: VEvent[] = [];
  private seq = 0;
  private current: number;
  private live = 0;
  /** Number of callbacks run so far (useful for simulator statistics). */
  eventsRun = 0;

  /** @param start initial time in ms (defaults to a fixed 2023 timestamp so values look like wall-clock time). */
  constructor(start = 1_700_000_000_000) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimeout(cb: () => void, ms: number): TimerHandle {
    return this.schedule(cb, Math.max(0, ms), 0);
  }

  /** Schedules with an explicit same-instant priority (lower runs first). Used by the in-memory network. */
  schedule(cb: () => void, ms: number, prio: number): TimerHandle {
    const ev: VEvent = { at: this.current + Math.max(0, ms), prio, seq: this.seq++, cb };
    this.push(ev);
    this.live++;
    return ev;
  }

  clearTimeout(handle: TimerHandle): void {
    const ev = handle as VEvent;
    if (ev && typeof ev === 'object' && 'cb' in ev && ev.cb !== null) {
      ev.cb = null;
      this.live--;
    }
  }

  /** Number of timers still pending (cancelled ones excluded). */
  pending(): number {
    return this.live;
  }

  /** Time of the next pending event, or undefined. */
  nextAt(): number | undefined {
    this.dropCancelledTop();
    return this.heap.length > 0 ? this.heap[0]!.at : undefined;
  }

  /** Runs every event due within the next `ms` milliseconds, then sets the time to now + ms. */
  advance(ms: number): void {
    const end = this.current + Math.max(0, ms);
    for (;;) {
      this.dropCancelledTop();
      const top = this.heap[0];
      if (top === undefined || top.at > end) break;
      this.runTop();
    }
    this.current = end;
  }

  /**
   * Runs events one at a time until `done()` returns true (checked before the first and after every event) or
   * until `limitMs` of virtual time has passed. Returns whether `done()` became true. On success the clock stays
   * at the time of the event that satisfied the predicate.
   */
  runUntil(done: () => boolean, limitMs: number): boolean {
    const end = this.current + Math.max(0, limitMs);
    if (done()) return true;
    for (;;) {
      this.dropCancelledTop();
      const top = this.heap[0];
      if (top === undefined || top.at > end) {
        this.current = end;
        return done();
      }
      this.runTop();
      if (done()) return true;
    }
  }

  private runTop(): void {
    const ev = this.pop();
    this.current = ev.at;
    const cb = ev.cb;
    if (cb === null) return;
    ev.cb = null;
    this.live--;
    this.eventsRun++;
    cb();
  }

  private dropCancelledTop(): void {
    while (this.heap.length > 0 && this.heap[0]!.cb === null) this.pop();
  }

  private push(ev: VEvent): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(ev, h[p]!)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = ev;
  }

  private pop(): VEvent {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && before(h[r]!, h[l]!) ? r : l;
        if (!before(h[c]!, last)) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}
