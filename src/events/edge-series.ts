/** Prometheus series of the edges, with a bounded cardinality: at most `max` (client_app, service) label pairs get
 * their own series, in the order they first appear; every later pair is counted under client_app="other",
 * service="other". A pair keeps its series for the daemon's life (its counters stay monotonic even after its edges
 * are forgotten), so the registry holds at most max + 1 series per metric whatever the traffic. Pure. */

/** One label pair's cumulative counters (its edges add to them as they count). */
export interface EdgeSeries {
  clientApp: string;
  service: string;
  connections: number;
  refused: number;
  denied: number;
  /** Open connections now: recomputed from the edges at each scrape (see EdgeStore.series()). */
  active: number;
}

export const DEFAULT_MAX_SERIES = 200;
export const OTHER = 'other';

export class SeriesTable {
  private readonly byPair = new Map<string, EdgeSeries>();
  readonly other: EdgeSeries = { clientApp: OTHER, service: OTHER, connections: 0, refused: 0, denied: 0, active: 0 };

  constructor(readonly max: number = DEFAULT_MAX_SERIES) {}

  /** The series for this label pair: its own while fewer than `max` exist, else the shared `other` one. */
  seriesFor(clientApp: string, service: string): EdgeSeries {
    const k = `${clientApp}\u0000${service}`;
    const have = this.byPair.get(k);
    if (have) return have;
    if (this.byPair.size >= this.max) return this.other;
    const s: EdgeSeries = { clientApp, service, connections: 0, refused: 0, denied: 0, active: 0 };
    this.byPair.set(k, s);
    return s;
  }

  /** Every series with its own labels, then `other` (always present, so the metric's shape does not move). */
  all(): EdgeSeries[] {
    return [...this.byPair.values(), this.other];
  }

  get size(): number {
    return this.byPair.size;
  }
}
