/** The daemon's own file descriptors running out (its RLIMIT_NOFILE: EMFILE; the system's file table: ENFILE).
 *
 * What needs a descriptor in the daemon, and what happens while there is none:
 * - accepting a program's generator on the trap socket: the program is refused at once with EMFILE/ENFILE and a
 *   message (see TrapServer); the one spare descriptor held here makes room for that accept and the refusal;
 * - receiving a fast-path connection's two descriptors (SCM_RIGHTS): while out of descriptors the daemon offers no
 *   fast path, so connections go over TCP, which needs no descriptor in the daemon; one whose descriptors the kernel
 *   dropped anyway (MSG_CTRUNC) is reset (see TrapHandler.connectedLost);
 * - the sweep's /proc reads, the control, peer and metrics sockets: they fail and are retried by their callers.
 * Every failure is reported here: one log line when the descriptors run out (then at most one per `logEveryMs`, with
 * what failed and how often), a probe every `probeMs` until a few descriptors can be opened again, and one line when
 * they are back. The daemon then offers the fast path again and resumes accepting (see onRecover). */
import { openSync } from 'node:fs';
import type { Logger } from 'pino';
import { native } from '../native/binding.js';

/** Opens and closes throw-away descriptors (default: /dev/null, O_CLOEXEC as every fd Node opens). */
export interface FdOps {
  open(): number;
  close(fd: number): void;
}

export interface FdBudgetOptions {
  ops?: FdOps;
  /** How often to check whether descriptors are back while out of them (ms). */
  probeMs?: number;
  /** At most one "out of descriptors" line per this many ms. */
  logEveryMs?: number;
  /** Descriptors that must open at once for the daemon to count as recovered. */
  probeFds?: number;
  now?: () => number;
}

const devNull: FdOps = {
  open: () => openSync('/dev/null', 'r'),
  close: (fd) => native.close(fd),
};

/** Whether an errno code means no descriptor was to be had (this process's limit or the system's). */
export function isFdExhaustion(code: string | undefined): boolean {
  return code === 'EMFILE' || code === 'ENFILE';
}

/** The `code` of a thrown error, if it has one. */
export function errCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

export class FdBudget {
  private low = false;
  private since = 0;
  private failures = 0;
  private suppressed = 0;
  private lastLog = -Infinity;
  private logged = false;
  private spare = -1;
  private probeTimer?: NodeJS.Timeout;
  private readonly recovered: Array<() => void> = [];
  private readonly ops: FdOps;
  private readonly probeMs: number;
  private readonly logEveryMs: number;
  private readonly probeFds: number;
  private readonly now: () => number;
  /** Episodes of running out, since start. */
  episodes = 0;

  constructor(
    private readonly log: Logger,
    opts: FdBudgetOptions = {},
  ) {
    this.ops = opts.ops ?? devNull;
    this.probeMs = opts.probeMs ?? 250;
    this.logEveryMs = opts.logEveryMs ?? 10_000;
    this.probeFds = opts.probeFds ?? 4;
    this.now = opts.now ?? Date.now;
    this.restoreSpare();
  }

  /** Whether the daemon is out of descriptors (from the first failure until a probe finds some again). */
  get exhausted(): boolean {
    return this.low;
  }

  /** Calls cb each time descriptors are back after running out. */
  onRecover(cb: () => void): void {
    this.recovered.push(cb);
  }

  /** Closes the spare descriptor so that the caller's next one fits. False when there is no spare to give. */
  releaseSpare(): boolean {
    if (this.spare < 0) return false;
    this.ops.close(this.spare);
    this.spare = -1;
    return true;
  }

  /** Takes the spare descriptor back if there is room for it; returns whether the spare is held. */
  restoreSpare(): boolean {
    if (this.spare >= 0) return true;
    try {
      this.spare = this.ops.open();
      return true;
    } catch {
      return false;
    }
  }

  /** `what` failed for want of a descriptor (`code`: EMFILE, ENFILE, or MSG_CTRUNC for descriptors the kernel
   * dropped on receipt). Logs (rate-limited) and probes until descriptors are back. */
  fail(what: string, code: string): void {
    this.failures++;
    const now = this.now();
    if (!this.low) {
      this.low = true;
      this.since = now;
      this.episodes++;
      this.logged = false;
      this.startProbing();
    }
    if (now - this.lastLog < this.logEveryMs) {
      this.suppressed++;
      return;
    }
    this.lastLog = now;
    const first = !this.logged;
    this.logged = true;
    this.log.warn(
      { what, code, failures: this.failures, suppressed: this.suppressed || undefined },
      first
        ? 'daemon out of file descriptors: fast-path connections fall back to TCP and new programs are refused until descriptors return'
        : 'daemon still out of file descriptors',
    );
    this.suppressed = 0;
  }

  /** Checks now whether descriptors are back (also runs every probeMs while out of them). */
  probe(): boolean {
    if (!this.low) return true;
    const opened: number[] = [];
    try {
      for (let i = 0; i < this.probeFds; i++) opened.push(this.ops.open());
    } catch {
      /* not yet */
    } finally {
      for (const fd of opened) this.ops.close(fd);
    }
    if (opened.length < this.probeFds || !this.restoreSpare()) return false;
    this.low = false;
    this.stopProbing();
    if (this.logged) {
      this.log.info({ afterMs: this.now() - this.since, failures: this.failures }, 'file descriptors available again: fast path and new programs back');
    }
    this.failures = 0;
    this.suppressed = 0;
    for (const cb of this.recovered) cb();
    return true;
  }

  private startProbing(): void {
    if (this.probeTimer) return;
    this.probeTimer = setInterval(() => this.probe(), this.probeMs);
    this.probeTimer.unref();
  }

  private stopProbing(): void {
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  }

  /** Stops probing and gives the spare back. */
  close(): void {
    this.stopProbing();
    this.releaseSpare();
  }
}
