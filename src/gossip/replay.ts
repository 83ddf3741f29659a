// Replay protection: per-sender-session sliding sequence window plus a timestamp freshness bound.

import type { ReplayHeader } from './envelope.js';

/** Outcome of a replay check. */
export type ReplayVerdict = 'ok' | 'replayed' | 'stale';

/** Width of the per-session sequence window (packets older than max − WINDOW are refused). */
export const REPLAY_WINDOW = 64;
const WINDOW_MASK = (1n << BigInt(REPLAY_WINDOW)) - 1n;

interface SessionWindow {
  maxSeq: number;
  /** Bit i set ⇔ sequence maxSeq − i was seen. */
  bits: bigint;
  lastSeen: number;
}

/** Options of a {@link ReplayGuard}. */
export interface ReplayGuardOptions {
  /** Packets whose timestamp differs from the local clock by more than this are 'stale'. */
  maxAgeMs: number;
  /** Cap on tracked sessions; the least recently seen is evicted first. */
  maxSessions: number;
}

/**
 * Rejects packets that were already accepted (same session and sequence) or whose timestamp is outside
 * ±maxAgeMs of the local clock. Only meaningful on authenticated packets: call it after decryption.
 * A session entry is kept for 2·maxAgeMs after its last packet, which covers clock skew up to maxAgeMs.
 */
export class ReplayGuard {
  private readonly sessions = new Map<number, SessionWindow>();
  /** Sessions evicted while still fresh because of the cap (should stay 0; a non-zero value means raise it). */
  evictedFresh = 0;

  constructor(private readonly opts: ReplayGuardOptions) {}

  /** Checks and, when 'ok', records the packet. */
  check(h: ReplayHeader, now: number): ReplayVerdict {
    if (Math.abs(now - h.timestamp) > this.opts.maxAgeMs) return 'stale';
    const seq = BigInt(h.seq);
    let w = this.sessions.get(h.session);
    if (w === undefined) {
      this.evict(now);
      w = { maxSeq: h.seq, bits: 1n, lastSeen: now };
      this.sessions.set(h.session, w);
      return 'ok';
    }
    if (h.seq > w.maxSeq) {
      const shift = BigInt(h.seq - w.maxSeq);
      w.bits = shift >= BigInt(REPLAY_WINDOW) ? 1n : ((w.bits << shift) | 1n) & WINDOW_MASK;
      w.maxSeq = h.seq;
    } else {
      const age = BigInt(w.maxSeq) - seq;
      if (age >= BigInt(REPLAY_WINDOW)) return 'replayed';
      const bit = 1n << age;
      if ((w.bits & bit) !== 0n) return 'replayed';
      w.bits |= bit;
    }
    // Move to the back of the map: iteration order is then least-recently-seen first.
    w.lastSeen = now;
    this.sessions.delete(h.session);
    this.sessions.set(h.session, w);
    return 'ok';
  }

  /** Number of tracked sessions. */
  get size(): number {
    return this.sessions.size;
  }

  private evict(now: number): void {
    const keepFor = 2 * this.opts.maxAgeMs;
    for (const [id, w] of this.sessions) {
      if (now - w.lastSeen > keepFor) {
        this.sessions.delete(id);
      } else if (this.sessions.size >= this.opts.maxSessions) {
        this.sessions.delete(id);
        this.evictedFresh++;
      } else {
        break;
      }
    }
  }
}
