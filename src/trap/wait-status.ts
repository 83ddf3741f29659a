/** A wait(2) status, as the generator reports a program's end (AS_EXIT), decoded for people and logs: an exit code
 * or the signal that ended it (wait(2): WIFEXITED/WEXITSTATUS, WIFSIGNALED/WTERMSIG/WCOREDUMP). */
import { constants } from 'node:os';

export type ProgramEnd = { exitCode: number } | { signal: string; coreDumped: boolean } | { waitStatus: number };

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** Decodes a raw wait status; one that is neither an exit nor a death by signal (stopped, garbage) stays raw. */
export function decodeWaitStatus(status: number): ProgramEnd {
  if (!Number.isInteger(status) || status < 0 || status > 0xffff) return { waitStatus: status };
  const sig = status & 0x7f;
  if (sig === 0) return { exitCode: (status >> 8) & 0xff };
  if (sig !== 0x7f) return { signal: SIGNAL_NAMES.get(sig) ?? `SIG${sig}`, coreDumped: (status & 0x80) !== 0 };
  return { waitStatus: status };
}
