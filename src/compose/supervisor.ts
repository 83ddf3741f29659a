/** The supervisor of one `appswitch up` project: starts its services in dependency order, each only once the
 * services it depends on are ready; restarts what its `restart:` policy says; stops one service, all of them, or
 * restarts one without touching the rest. A crashed service is shown as crashed and the others keep running. */
import { setTimeout as sleep } from 'node:timers/promises';
import { type CliRef, type ExitInfo, Instance, type InstanceState } from './instance.js';
import type { LogBook } from './logbook.js';
import { probe, registered } from './readiness.js';
import type { ProjectSpec, ServiceSpec } from './types.js';

export type ServiceState = 'waiting' | 'starting' | 'ready' | 'failed' | 'blocked' | 'stopped';

export interface InstanceRow {
  service: string;
  name: string;
  state: InstanceState | ServiceState;
  pid: number | null;
  vip: string | null;
  restarts: number;
  exitCode: number | null;
  signal: string | null;
  uptimeSeconds: number | null;
  ports: string[];
  /** Why a service failed or is blocked. */
  detail: string | null;
}

/** Restart back-off: 1 s, doubling to 30 s; a run of 10 s resets it. */
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const STABLE_MS = 10000;

class ServiceRun {
  state: ServiceState = 'waiting';
  detail: string | null = null;
  readonly instances: Instance[] = [];
  /** Settles once the service is ready (true) or can no longer become ready in this start (false). */
  settled: Promise<boolean>;
  private settle!: (ok: boolean) => void;
  backoffMs = BACKOFF_MIN_MS;
  /** Bumped by every start/stop, so a stale readiness wait or restart timer knows it no longer counts. */
  generation = 0;

  constructor(readonly spec: ServiceSpec) {
    this.settled = this.fresh();
  }

  fresh(): Promise<boolean> {
    this.settled = new Promise((r) => (this.settle = r));
    return this.settled;
  }

  done(ok: boolean): void {
    this.settle(ok);
  }
}

export class Supervisor {
  private readonly runs = new Map<string, ServiceRun>();
  private stopping = false;
  /** Some service failed (not ready, or exited non-zero with no restart): `up`'s exit status. */
  failed = false;

  constructor(
    readonly spec: ProjectSpec,
    private readonly cli: CliRef,
    private readonly logs: LogBook,
  ) {
    for (const s of spec.services) {
      const run = new ServiceRun(s);
      for (let n = 1; n <= s.replicas; n++) {
        const label = s.replicas > 1 ? `${s.name}-${n}` : s.name;
        run.instances.push(new Instance(label, s, spec.name, cli, logs, (i, e) => this.exited(run, i, e)));
      }
      this.runs.set(s.name, run);
    }
  }

  labels(): string[] {
    return [...this.runs.values()].flatMap((r) => r.instances.map((i) => i.label));
  }

  /** Starts every service (independent ones at once, each after its dependencies are ready). True when all are
   * ready; false when one failed (the ones that depend on it are not started: blocked). */
  async up(): Promise<boolean> {
    const all = [...this.runs.values()].map((r) => this.startService(r));
    const results = await Promise.all(all);
    return results.every(Boolean);
  }

  private async startService(run: ServiceRun): Promise<boolean> {
    const gen = ++run.generation;
    run.fresh();
    run.state = 'waiting';
    run.detail = null;
    for (const dep of run.spec.dependsOn) {
      const d = this.runs.get(dep);
      if (!d) continue;
      const ok = await d.settled;
      if (gen !== run.generation || this.stopping) return false;
      if (!ok) {
        run.state = 'blocked';
        run.detail = `${dep} is not ready`;
        this.logs.note(`${run.spec.name}: not started: ${dep} is not ready`);
        this.failed = true;
        run.done(false);
        return false;
      }
    }
    run.state = 'starting';
    this.logs.note(`${run.spec.name}: starting ${run.instances.length > 1 ? `${run.instances.length} replicas` : ''}`.trimEnd());
    for (const i of run.instances) i.start();
    const ok = await this.waitReady(run, gen);
    if (gen !== run.generation) return ok;
    if (ok) {
      run.state = 'ready';
      for (const i of run.instances) if (i.alive) i.state = 'ready';
      this.logs.note(`${run.spec.name}: ready`);
    } else if (!this.stopping) {
      run.state = 'failed';
      this.failed = true;
      this.logs.note(`${run.spec.name}: failed: ${run.detail ?? 'not ready'}`);
    }
    run.done(ok);
    return ok;
  }

  private async waitReady(run: ServiceRun, gen: number): Promise<boolean> {
    const ready = run.spec.ready;
    const deadline = Date.now() + (ready?.timeoutMs ?? 60000);
    const interval = ready?.intervalMs ?? 200;
    let detail = 'not ready';
    let registeredYet = false;
    const restarts = run.instances.map((i) => i.restarts);
    for (;;) {
      if (gen !== run.generation || this.stopping) return false;
      /* an instance that ended before the service was ready fails this start (its restart policy goes on) */
      const ended = run.instances.filter((i, n) => !i.alive || i.restarts !== restarts[n]);
      if (ended.length) {
        run.detail = `${ended.map((i) => `${i.label} ${i.last?.signal ? `was killed by ${i.last.signal}` : `exited with code ${i.last?.code ?? '?'}`}`).join(', ')} before it was ready`;
        return false;
      }
      try {
        const live = run.instances.filter((i) => i.alive);
        if (!registeredYet && live.length === run.instances.length) {
          const r = await registered(this.cli, live);
          registeredYet = r.ok;
          detail = r.detail;
        }
        if (registeredYet) {
          if (!ready) return true;
          const r = await probe(this.cli, this.spec.name, run.spec, run.instances, ready.check);
          if (r.ok) return true;
          detail = r.detail;
        }
      } catch (e) {
        detail = `asking the daemon: ${(e as Error).message}`;
      }
      if (Date.now() >= deadline) {
        run.detail = `not ready after ${Math.round((ready?.timeoutMs ?? 60000) / 1000)} s: ${detail}`;
        return false;
      }
      await sleep(interval);
    }
  }

  private exited(run: ServiceRun, i: Instance, e: ExitInfo): void {
    const how = e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
    const wanted = i.state === 'stopping' || this.stopping;
    const ok = e.code === 0 && !e.signal;
    if (wanted) {
      i.state = 'stopped';
      return;
    }
    i.state = ok ? 'exited' : 'crashed';
    this.logs.note(`${i.label}: ${how}`);
    const again = run.spec.restart === 'always' || (run.spec.restart === 'on-failure' && !ok);
    if (!again) {
      if (!ok) this.failed = true;
      return;
    }
    const lived = Date.now() - (i.startedAt ?? 0);
    if (lived >= STABLE_MS) run.backoffMs = BACKOFF_MIN_MS;
    const wait = run.backoffMs;
    run.backoffMs = Math.min(run.backoffMs * 2, BACKOFF_MAX_MS);
    i.state = 'restarting';
    const gen = run.generation;
    this.logs.note(`${i.label}: restarting in ${wait / 1000} s (restart: ${run.spec.restart})`);
    setTimeout(() => {
      if (this.stopping || gen !== run.generation || i.state !== 'restarting') return;
      i.restarts++;
      i.start();
      void this.markReadyLater(run, i, gen);
    }, wait).unref();
  }

  /** A restarted instance counts as ready again once the service's check passes (best effort, for `ps`). */
  private async markReadyLater(run: ServiceRun, i: Instance, gen: number): Promise<void> {
    const deadline = Date.now() + (run.spec.ready?.timeoutMs ?? 60000);
    while (Date.now() < deadline && gen === run.generation && i.alive && !this.stopping) {
      try {
        const r = await registered(this.cli, [i]);
        const p = r.ok && run.spec.ready ? await probe(this.cli, this.spec.name, run.spec, [i], run.spec.ready.check) : r;
        if (p.ok) {
          if (i.alive && i.state === 'starting') i.state = 'ready';
          return;
        }
      } catch {
        /* the daemon restarting: try again */
      }
      await sleep(run.spec.ready?.intervalMs ?? 200);
    }
  }

  private run(name: string): ServiceRun {
    const r = this.runs.get(name);
    if (!r) throw new Error(`no service "${name}" in project ${this.spec.name} (services: ${[...this.runs.keys()].join(', ')})`);
    return r;
  }

  /** Stops one service's instances (SIGTERM, then SIGKILL after its stop_timeout). */
  async stopService(name: string): Promise<void> {
    const run = this.run(name);
    run.generation++;
    run.done(false);
    await Promise.all(run.instances.map((i) => i.stop(run.spec.stopTimeoutMs)));
    for (const i of run.instances) if (i.state === 'restarting') i.state = 'stopped';
    run.state = 'stopped';
    run.detail = null;
    this.logs.note(`${name}: stopped`);
  }

  /** Stops (when running) and starts one service again; the others are not touched. True when it became ready. */
  async restartService(name: string): Promise<boolean> {
    const run = this.run(name);
    await this.stopService(name);
    for (const i of run.instances) i.restarts++;
    run.backoffMs = BACKOFF_MIN_MS;
    return this.startService(run);
  }

  async startStopped(name: string): Promise<boolean> {
    const run = this.run(name);
    if (run.instances.some((i) => i.alive)) return run.state === 'ready';
    return this.startService(run);
  }

  /** Stops everything, dependents before what they depend on. */
  async down(): Promise<void> {
    this.stopping = true;
    for (const s of [...this.spec.services].reverse()) await this.stopService(s.name);
  }

  rows(): InstanceRow[] {
    const out: InstanceRow[] = [];
    for (const run of this.runs.values()) {
      for (const i of run.instances) {
        const alive = i.alive;
        const state: InstanceState | ServiceState = alive || i.last || i.state === 'restarting' ? i.state : run.state;
        out.push({
          service: run.spec.name,
          name: i.label,
          state: run.state === 'failed' && alive ? 'failed' : state,
          pid: alive ? (i.pid ?? null) : null,
          vip: i.vip ?? null,
          restarts: i.restarts,
          exitCode: !alive && i.last ? i.last.code : null,
          signal: !alive && i.last ? i.last.signal : null,
          uptimeSeconds: alive && i.startedAt ? Math.floor((Date.now() - i.startedAt) / 1000) : null,
          ports: run.spec.ports.map((p) => `${p.hostPort}->${p.port}`),
          detail: run.detail,
        });
      }
    }
    return out;
  }

  /** Every instance has exited (and none will restart). */
  allEnded(): boolean {
    return [...this.runs.values()].every((r) => r.instances.every((i) => !i.alive && i.state !== 'restarting'));
  }
}
