/** Unexpected exceptions in the daemon: a throw out of an event handler (a socket, a timer, a native poller, a promise
 * nobody awaits) would end the process, and with it the switch for every program on the host. Each module's entry
 * points catch what they throw and report it here: it is logged (level error, at most one line per module and place
 * every 10 s, with how many were left out), counted per module (`internalErrors` in `appswitch status`,
 * `appswitch_internal_errors_total{module}`), and costs only the request or event it happened in.
 *
 * The process-level handlers (installProcessGuards) catch what still escapes — a callback of a library we do not
 * wrap. They log and count it as module "process" and KEEP SERVING rather than exit: every handler of ours is
 * guarded at its own boundary, so what reaches them is one event of one connection whose state is that connection's;
 * exiting would turn one bad packet into a denial of service for every program on the host (their connections
 * survive a restart, but every trapped call waits for the next daemon and new names do not resolve meanwhile). */
import type { Logger } from 'pino';
import type { Clock } from '../gossip/clock.js';

/** Where an unexpected exception happened. */
export const ERROR_MODULES = ['dns', 'trap', 'gossip', 'peers', 'control', 'metrics', 'ui', 'daemon', 'process'] as const;
export type ErrorModule = (typeof ERROR_MODULES)[number];

/** Reports one unexpected exception; `what` names the place (a handler), never the input. Never throws. */
export type InternalErrorReporter = (what: string, err: unknown) => void;

const LOG_INTERVAL_MS = 10_000;

export class InternalErrors {
  private readonly counts = new Map<ErrorModule, number>(ERROR_MODULES.map((m) => [m, 0]));
  private readonly logged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Logs (rate-limited per module and place) and counts one exception. Never throws. */
  report(module: ErrorModule, what: string, err: unknown): void {
    this.counts.set(module, (this.counts.get(module) ?? 0) + 1);
    try {
      const key = `${module}/${what}`;
      const t = this.now();
      const last = this.logged.get(key);
      if (last && t - last.at < LOG_INTERVAL_MS) {
        last.suppressed++;
        return;
      }
      if (this.logged.size > 1000) this.logged.clear(); /* places are few; bounded anyway */
      this.logged.set(key, { at: t, suppressed: 0 });
      const line: Record<string, unknown> = { module, where: what, err, internalErrors: this.counts.get(module) };
      if (last?.suppressed) line.suppressed = last.suppressed;
      this.log.error(line, `internal error in ${module}: ${what}; that request is dropped, the daemon keeps serving`);
    } catch {
      /* a logger that throws must not make one lost request a lost daemon */
    }
  }

  /** A reporter bound to one module (what the modules take). */
  reporter(module: ErrorModule): InternalErrorReporter {
    return (what, err) => this.report(module, what, err);
  }

  /** Counts since start, by module (every module listed, zeros included). */
  snapshot(): Record<ErrorModule, number> {
    return Object.fromEntries(this.counts) as Record<ErrorModule, number>;
  }

  /** `clock` whose timer callbacks are guarded: a throw is reported under `module` (the gossip layer's timers). */
  guardClock(clock: Clock, module: ErrorModule): Clock {
    return {
      now: () => clock.now(),
      setTimeout: (cb, ms) =>
        clock.setTimeout(() => {
          try {
            cb();
          } catch (e) {
            this.report(module, 'a timer', e);
          }
        }, ms),
      clearTimeout: (h) => clock.clearTimeout(h),
    };
  }
}

/** Runs `fn` now; a throw is reported and then `cleanup` runs (e.g. closing the connection it concerned). */
export function guard(report: InternalErrorReporter, what: string, fn: () => void, cleanup?: () => void): void {
  try {
    fn();
  } catch (e) {
    report(what, e);
    try {
      cleanup?.();
    } catch {
      /* nothing more to undo */
    }
  }
}

/** An event handler that never throws: see guard. */
export function guarded<A extends unknown[]>(report: InternalErrorReporter, what: string, fn: (...a: A) => void): (...a: A) => void {
  return (...a: A): void => guard(report, what, () => fn(...a));
}

/** Catches what escapes every guard (see the header for why the daemon keeps serving). Returns a function that
 * removes the handlers. */
export function installProcessGuards(proc: NodeJS.Process, errors: InternalErrors): () => void {
  const onException = (err: Error): void => errors.report('process', 'an uncaught exception', err);
  const onRejection = (reason: unknown): void => errors.report('process', 'an unhandled promise rejection', reason);
  proc.on('uncaughtException', onException);
  proc.on('unhandledRejection', onRejection);
  return () => {
    proc.off('uncaughtException', onException);
    proc.off('unhandledRejection', onRejection);
  };
}
