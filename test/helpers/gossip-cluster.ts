// Test harness: N Memberlist nodes on one MemoryNetwork / VirtualClock, with event logs and agreement checks.

import {
  Memberlist,
  MemoryNetwork,
  seededRandom,
  type ChangeEvent,
  type GossipLimits,
  type MemberEvent,
  type MemberlistOptions,
  type ProfileName,
  type ProtocolConfig,
} from '../../src/gossip/index.js';

/** A node of a {@link TestCluster}. */
export interface TestNode {
  name: string;
  addr: string;
  ml: Memberlist;
  memberEvents: Array<MemberEvent & { at: number }>;
  changes: Array<ChangeEvent & { at: number }>;
}

/** Options of a {@link TestCluster}. */
export interface TestClusterOptions {
  seed?: number;
  lossRate?: number;
  latencyMs?: number;
  jitterMs?: number;
  profile?: ProfileName;
  config?: Partial<ProtocolConfig>;
  limits?: Partial<GossipLimits>;
  keyring?: readonly Uint8Array[];
}

/** Builds and drives a deterministic in-memory cluster. */
export class TestCluster {
  readonly net: MemoryNetwork;
  readonly nodes = new Map<string, TestNode>();
  private counter = 0;

  constructor(private readonly opts: TestClusterOptions = {}) {
    this.net = new MemoryNetwork({
      seed: opts.seed ?? 1,
      lossRate: opts.lossRate ?? 0,
      latencyMs: opts.latencyMs ?? 1,
      jitterMs: opts.jitterMs ?? 1,
    });
  }

  get clock(): MemoryNetwork['clock'] {
    return this.net.clock;
  }

  /** Address used for node `name`. */
  static addr(name: string): string {
    return `${name}.test:7946`;
  }

  /** Creates (or re-creates after shutdown) a node. */
  add(name: string, extra: Partial<MemberlistOptions> = {}): TestNode {
    const addr = TestCluster.addr(name);
    const transport = this.net.createTransport(addr);
    const idx = ++this.counter;
    const node: TestNode = { name, addr, ml: undefined as unknown as Memberlist, memberEvents: [], changes: [] };
    const ml = new Memberlist({
      name,
      transport,
      clock: this.net.clockFor(addr),
      random: seededRandom((this.opts.seed ?? 1) * 7919 + idx),
      profile: this.opts.profile ?? 'lan',
      ...(this.opts.config !== undefined ? { config: this.opts.config } : {}),
      ...(this.opts.limits !== undefined ? { limits: this.opts.limits } : {}),
      ...(this.opts.keyring !== undefined ? { keyring: this.opts.keyring } : {}),
      ...extra,
    });
    node.ml = ml;
    ml.on('member', (e) => node.memberEvents.push({ ...e, at: this.clock.now() }));
    ml.on('change', (e) => node.changes.push({ ...e, at: this.clock.now() }));
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): TestNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  /** Nodes not shut down. */
  running(): TestNode[] {
    return [...this.nodes.values()].filter((n) => !this.down.has(n.name));
  }

  private readonly down = new Set<string>();

  /** Crashes a node: no leave, it just stops. */
  kill(name: string): void {
    this.node(name).ml.shutdown();
    this.down.add(name);
  }

  /** Marks a node as running again after `add` re-created it. */
  revive(name: string): void {
    this.down.delete(name);
  }

  /** Starts `n` nodes named n1..nN and joins all of them through n1, then runs until everyone sees everyone. */
  async start(n: number, limitMs = 30_000): Promise<TestNode[]> {
    const list: TestNode[] = [];
    for (let i = 1; i <= n; i++) list.push(this.add(`n${i}`));
    const joins = list.slice(1).map((x) => x.ml.join([list[0]!.addr], { maxAttempts: 20 }));
    const ok = this.runUntil(() => this.converged(), limitMs);
    await Promise.all(joins);
    if (!ok) throw new Error('cluster did not converge');
    return list;
  }

  /** Advances virtual time. */
  run(ms: number): void {
    this.clock.advance(ms);
  }

  runUntil(pred: () => boolean, limitMs: number): boolean {
    return this.clock.runUntil(pred, limitMs);
  }

  /** True when every running node sees exactly the running nodes as alive (and nobody else as alive/suspect). */
  converged(): boolean {
    const running = this.running();
    const names = new Set(running.map((n) => n.name));
    for (const n of running) {
      let alive = 0;
      for (const m of n.ml.members()) {
        if (m.state === 'alive') {
          if (!names.has(m.name)) return false;
          alive++;
        } else if (m.state === 'suspect') {
          return false;
        } else if (names.has(m.name)) {
          return false;
        }
      }
      if (alive !== names.size) return false;
    }
    return true;
  }

  /** State of `target` as seen by `observer`. */
  stateOf(observer: string, target: string): string | undefined {
    return this.node(observer).ml.member(target)?.state;
  }

  /** Value of key `key` of `owner` as seen by `observer` (decoded as UTF-8). */
  valueAt(observer: string, owner: string, key: string): string | undefined {
    const v = this.node(observer).ml.view().get(owner)?.get(key);
    return v === undefined ? undefined : new TextDecoder().decode(v);
  }

  /** Every 'dead' member event about `target` recorded by any node. */
  deathsOf(target: string): Array<{ observer: string; at: number }> {
    const out: Array<{ observer: string; at: number }> = [];
    for (const n of this.nodes.values()) {
      for (const e of n.memberEvents) if (e.name === target && e.state === 'dead') out.push({ observer: n.name, at: e.at });
    }
    return out;
  }
}
