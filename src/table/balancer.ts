/** Client-side load balancing over the instances of one service. The daemon keeps a count of in-flight (open)
 * connections per real endpoint on this host; strategies pick from the instances the caller passes (already
 * filtered by policy and member health). */
import type { ServiceEntry } from './service-table.js';

export type LbStrategy = 'random' | 'round-robin' | 'least-conn' | 'p2c';
export const LB_STRATEGIES: readonly LbStrategy[] = ['random', 'round-robin', 'least-conn', 'p2c'];

export class Balancer {
  private readonly inflight = new Map<string, number>();
  private readonly rr = new Map<string, number>();

  constructor(private readonly random: () => number = Math.random) {}

  /** Replaces the in-flight counts with a fresh measurement (endpoint "ip:port" -> open connections). */
  setInflight(counts: Map<string, number>): void {
    this.inflight.clear();
    for (const [k, v] of counts) this.inflight.set(k, v);
  }

  /** Counts a connection just handed out, until the next measurement. */
  noteConnect(e: ServiceEntry): void {
    const k = epKey(e);
    this.inflight.set(k, (this.inflight.get(k) ?? 0) + 1);
  }

  load(e: ServiceEntry): number {
    return this.inflight.get(epKey(e)) ?? 0;
  }

  pick(instances: readonly ServiceEntry[], strategy: LbStrategy, key: string): ServiceEntry | undefined {
    const n = instances.length;
    if (n === 0) return undefined;
    if (n === 1) return instances[0];
    switch (strategy) {
      case 'random':
        return instances[Math.floor(this.random() * n)];
      case 'round-robin': {
        const i = this.rr.get(key) ?? 0;
        this.rr.set(key, i + 1);
        return instances[i % n];
      }
      case 'least-conn': {
        let best = instances[0] as ServiceEntry;
        for (const e of instances) if (this.load(e) < this.load(best)) best = e;
        return best;
      }
      case 'p2c': {
        const a = instances[Math.floor(this.random() * n)] as ServiceEntry;
        let b = instances[Math.floor(this.random() * (n - 1))] as ServiceEntry;
        if (b === a) b = instances[n - 1] as ServiceEntry;
        return this.load(b) < this.load(a) ? b : a;
      }
    }
  }
}

function epKey(e: ServiceEntry): string {
  return `${e.endpoint.ip}:${e.endpoint.port}`;
}
