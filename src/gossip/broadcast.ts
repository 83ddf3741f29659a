// Transmit-limited broadcast queue: pending gossip ordered by (fewest transmissions, newest first), invalidated by
// key, bounded in length; messages too big for a datagram are kept apart for the stream channel.

/** Something to disseminate. */
export interface BroadcastItem {
  /** Invalidation key: a new broadcast with the same key replaces the pending one (e.g. "m:<node>"). */
  key: string;
  /** The framed message bytes. */
  msg: Uint8Array;
  /** Called once when the item leaves the queue: `true` after its last transmission, `false` if replaced/dropped. */
  onDone?: ((transmitted: boolean) => void) | undefined;
}

/** A pending item selected by {@link BroadcastQueue.peek}; pass it back to {@link BroadcastQueue.commit}. */
export interface Pending {
  readonly msg: Uint8Array;
}

interface Node {
  item: BroadcastItem;
  msg: Uint8Array;
  transmits: number;
  /** Transmissions credited by feedback (duplicates received); at most half the limit. */
  credited: number;
  bucket: number;
  prev: Node | null;
  next: Node | null;
  large: boolean;
}

/** Number of items scanned per {@link BroadcastQueue.take} at most (bounds CPU when nothing fits). */
const MAX_SCAN = 512;
/** Stop scanning after this many consecutive items that did not fit: the packet is as good as full. */
const MAX_MISSES = 16;

/**
 * The queue keeps one doubly linked list per transmit count, newest at the head, so taking the least-sent newest
 * items, moving them one bucket up, replacing by key and evicting the most-sent oldest are all O(1) per item.
 */
export class BroadcastQueue {
  private buckets: Array<Node | null> = [];
  private tails: Array<Node | null> = [];
  private readonly byKey = new Map<string, Node>();
  private readonly large: Node[] = [];
  /** Items evicted because the queue was full. */
  evicted = 0;

  /**
   * @param maxItems cap on pending items (oldest most-transmitted are evicted first)
   * @param maxPacketMessage largest message that can ride in a datagram; bigger ones go to the stream list
   */
  constructor(
    private readonly maxItems: number,
    private readonly maxPacketMessage: number,
  ) {}

  /** Pending items (datagram and stream). */
  get size(): number {
    return this.byKey.size;
  }

  /** Adds an item, replacing any pending item with the same key. */
  enqueue(item: BroadcastItem): void {
    const old = this.byKey.get(item.key);
    if (old !== undefined) this.remove(old, false);
    const node: Node = { item, msg: item.msg, transmits: 0, credited: 0, bucket: 0, prev: null, next: null, large: false };
    this.byKey.set(item.key, node);
    if (item.msg.length > this.maxPacketMessage) {
      node.large = true;
      this.large.push(node);
    } else {
      this.pushHead(node, 0);
    }
    while (this.byKey.size > this.maxItems) {
      if (!this.evictOne()) break;
    }
  }

  /** True when an item with this key is pending. */
  has(key: string): boolean {
    return this.byKey.has(key);
  }

  /**
   * Feedback from the network: a byte-identical copy of a pending item was received, so the sender already knows
   * it. Counts as one transmission (rumour mongering with feedback: a rumour that keeps coming back is saturating
   * and is retired sooner). At most ⌊limit/2⌋ − 2 transmissions are credited this way (none in small clusters,
   * where the limit is 4), so every rumour is still really sent more than half its limit: without that floor the
   * epidemic tail grows (members that never hear a rumour — fatal when the rumour is a refutation).
   * Returns true when `msg` matched a pending item.
   */
  sawDuplicate(key: string, msg: Uint8Array, limit: number): boolean {
    const n = this.byKey.get(key);
    if (n === undefined || n.large || !equalBytes(n.item.msg, msg)) return false;
    if (n.credited < Math.floor(limit / 2) - 2) {
      n.credited++;
      this.bump(n, limit);
    }
    return true;
  }

  /** Drops the pending item with this key, if any (its onDone gets `false`). */
  invalidate(key: string): void {
    const n = this.byKey.get(key);
    if (n !== undefined) this.remove(n, false);
  }

  /**
   * Selects datagram-sized messages whose sizes (plus `perMessageOverhead` each) fit in `budget` bytes, least
   * transmitted first and newest first within a count; counts one transmission for each and retires those that
   * reach `limit`.
   */
  take(budget: number, limit: number, perMessageOverhead = 0): Uint8Array[] {
    const picked = this.peek(budget, limit, perMessageOverhead);
    this.commit(picked, limit);
    return picked.map((p) => p.msg);
  }

  /**
   * Like {@link take} but only selects, in priority order, without counting transmissions. Commit the prefix that
   * was actually sent with {@link commit}, before any other call on the queue.
   */
  peek(budget: number, limit: number, perMessageOverhead = 0): Pending[] {
    const picked: Node[] = [];
    let remaining = budget;
    let scanned = 0;
    let misses = 0;
    this.retireAbove(limit);
    outer: for (let b = 0; b < this.buckets.length && b < limit; b++) {
      for (let n = this.buckets[b] ?? null; n !== null; n = n.next) {
        if (remaining <= perMessageOverhead + 2 || ++scanned > MAX_SCAN || misses >= MAX_MISSES) break outer;
        const need = n.item.msg.length + perMessageOverhead;
        if (need <= remaining) {
          remaining -= need;
          picked.push(n);
          misses = 0;
        } else {
          misses++;
        }
      }
    }
    return picked;
  }

  /** Counts one transmission for each item (returned by the last {@link peek}) and retires those at `limit`. */
  commit(sent: readonly Pending[], limit: number): void {
    // Reverse order: each bump pushes at the head of the next bucket, so the newest ends up first again.
    for (let i = sent.length - 1; i >= 0; i--) {
      const n = sent[i] as Node;
      if (this.byKey.get(n.item.key) === n && !n.large) this.bump(n, limit);
    }
  }

  /** Takes one stream-sized item (least transmitted first) and counts a transmission, or undefined. */
  takeLarge(limit: number): Uint8Array | undefined {
    if (this.large.length === 0) return undefined;
    let best = this.large[0]!;
    for (const n of this.large) if (n.transmits < best.transmits) best = n;
    best.transmits++;
    const msg = best.item.msg;
    if (best.transmits >= limit) this.remove(best, true);
    return msg;
  }

  private bump(n: Node, limit: number): void {
    this.unlink(n);
    n.transmits++;
    if (n.transmits >= limit) {
      this.byKey.delete(n.item.key);
      n.item.onDone?.(true);
      return;
    }
    this.pushHead(n, n.transmits);
  }

  private retireAbove(limit: number): void {
    for (let b = limit; b < this.buckets.length; b++) {
      while (this.buckets[b] != null) this.remove(this.buckets[b]!, true);
    }
  }

  private evictOne(): boolean {
    for (let b = this.buckets.length - 1; b >= 0; b--) {
      const tail = this.tails[b] ?? null;
      if (tail !== null) {
        this.remove(tail, false);
        this.evicted++;
        return true;
      }
    }
    if (this.large.length > 0) {
      this.remove(this.large[0]!, false);
      this.evicted++;
      return true;
    }
    return false;
  }

  private remove(n: Node, transmitted: boolean): void {
    if (n.large) {
      const i = this.large.indexOf(n);
      if (i >= 0) this.large.splice(i, 1);
    } else {
      this.unlink(n);
    }
    if (this.byKey.get(n.item.key) === n) this.byKey.delete(n.item.key);
    n.item.onDone?.(transmitted);
  }

  private pushHead(n: Node, b: number): void {
    while (this.buckets.length <= b) {
      this.buckets.push(null);
      this.tails.push(null);
    }
    n.bucket = b;
    n.prev = null;
    n.next = this.buckets[b]!;
    if (n.next !== null) n.next.prev = n;
    else this.tails[b] = n;
    this.buckets[b] = n;
  }

  private unlink(n: Node): void {
    const b = n.bucket;
    if (n.prev !== null) n.prev.next = n.next;
    else this.buckets[b] = n.next;
    if (n.next !== null) n.next.prev = n.prev;
    else this.tails[b] = n.prev;
    n.prev = null;
    n.next = null;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
