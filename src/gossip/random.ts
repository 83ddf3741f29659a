// Seeded pseudo-random numbers (sfc32) and the small random-selection helpers the protocol needs.

/** A function returning a uniformly distributed float in [0, 1), like `Math.random`. */
export type RandomSource = () => number;

/**
 * Deterministic PRNG (sfc32, seeded through splitmix32). Same seed, same sequence: the in-memory network and the
 * simulator depend on this for reproducible runs. Not for cryptographic use.
 */
export function seededRandom(seed: number): RandomSource {
  let s = seed >>> 0;
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  return (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
}

/** Integer in [0, n). */
export function randomInt(random: RandomSource, n: number): number {
  return Math.floor(random() * n);
}

/** Fisher–Yates shuffle in place; returns the same array. */
export function shuffle<T>(random: RandomSource, arr: T[]): T[] {
  for (let i = arr.length - 1; i > 0; i--) {
    const j = randomInt(random, i + 1);
    const t = arr[i]!;
    arr[i] = arr[j]!;
    arr[j] = t;
  }
  return arr;
}

/**
 * Picks up to `k` distinct elements of `items` that pass `accept`, uniformly at random, visiting at most
 * 3·len candidates (memberlist's kRandomNodes bound) so that a mostly-rejected list cannot loop long.
 */
export function pickRandom<T>(random: RandomSource, items: readonly T[], k: number, accept: (t: T) => boolean): T[] {
  const n = items.length;
  const out: T[] = [];
  if (k <= 0 || n === 0) return out;
  if (n <= 4 * k) {
    // Small list: filter then partial shuffle.
    const ok = items.filter(accept);
    for (let i = 0; i < ok.length && out.length < k; i++) {
      const j = i + randomInt(random, ok.length - i);
      const t = ok[i]!;
      ok[i] = ok[j]!;
      ok[j] = t;
      out.push(ok[i]!);
    }
    return out;
  }
  // Large list: sample indices; k is small, so duplicates are checked linearly.
  const picked: number[] = [];
  for (let tries = 0; tries < 3 * n && out.length < k; tries++) {
    const idx = randomInt(random, n);
    if (picked.includes(idx)) continue;
    picked.push(idx);
    const t = items[idx]!;
    if (accept(t)) out.push(t);
  }
  return out;
}
