/** A project's combined log: every line its programs print (and the supervisor's own notes), in the order they came,
 * as JSON lines in one file, so that `appswitch logs` works from another terminal, after a detach and after the
 * supervisor is gone. The file is rotated once at MAX_LOG_BYTES (one old generation is kept): it never grows
 * without bound. */
import { closeSync, existsSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';

export interface LogLine {
  /** ms since the epoch */
  t: number;
  /** the instance's label (`api-1`), or `appswitch` for the supervisor's notes */
  who: string;
  stream: 'out' | 'err' | 'sys';
  line: string;
}

export const MAX_LOG_BYTES = 16 * 1024 * 1024;
/** Longer lines are cut into pieces of this many characters. */
export const MAX_LINE = 16 * 1024;

export class LogBook {
  private fd: number;
  private size: number;
  private readonly listeners = new Set<(l: LogLine) => void>();

  constructor(
    private readonly file: string,
    private readonly maxBytes = MAX_LOG_BYTES,
  ) {
    this.fd = openSync(file, 'a', 0o600);
    this.size = statSync(file).size;
  }

  append(l: LogLine): void {
    const text = JSON.stringify(l) + '\n';
    if (this.size + text.length > this.maxBytes && this.size > 0) this.rotate();
    try {
      this.size += writeSync(this.fd, text);
    } catch {
      /* a full disk loses log lines, never the supervisor */
    }
    for (const fn of this.listeners) fn(l);
  }

  note(line: string): void {
    this.append({ t: Date.now(), who: 'appswitch', stream: 'sys', line });
  }

  subscribe(fn: (l: LogLine) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    closeSync(this.fd);
    renameSync(this.file, `${this.file}.1`);
    this.fd = openSync(this.file, 'a', 0o600);
    this.size = 0;
  }
}

/** Splits a stream's chunks into lines (a last unfinished line waits for the next chunk or flush()). */
export class LineSplitter {
  private rest = '';
  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: string): void {
    const text = this.rest + chunk;
    const parts = text.split('\n');
    this.rest = parts.pop() ?? '';
    for (const p of parts) this.out(p.endsWith('\r') ? p.slice(0, -1) : p);
    while (this.rest.length > MAX_LINE) {
      this.emit(this.rest.slice(0, MAX_LINE));
      this.rest = this.rest.slice(MAX_LINE);
    }
  }

  flush(): void {
    if (this.rest !== '') this.out(this.rest);
    this.rest = '';
  }

  private out(line: string): void {
    for (let i = 0; i < line.length || i === 0; i += MAX_LINE) this.emit(line.slice(i, i + MAX_LINE));
  }
}

/** The lines of a log file (its rotated generation first); lines that are not LogLines are skipped. */
export function readLog(file: string): LogLine[] {
  const out: LogLine[] = [];
  for (const f of [`${file}.1`, file]) {
    if (!existsSync(f)) continue;
    for (const raw of readFileSync(f, 'utf8').split('\n')) {
      const l = decodeLogLine(raw);
      if (l) out.push(l);
    }
  }
  return out;
}

export function decodeLogLine(raw: string): LogLine | undefined {
  if (raw === '') return undefined;
  try {
    const v = JSON.parse(raw) as Partial<LogLine>;
    if (typeof v.t !== 'number' || typeof v.who !== 'string' || typeof v.line !== 'string') return undefined;
    if (v.stream !== 'out' && v.stream !== 'err' && v.stream !== 'sys') return undefined;
    return { t: v.t, who: v.who, stream: v.stream, line: v.line };
  } catch {
    return undefined;
  }
}

const PALETTE = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/** How `up` and `logs` print a line: `api-1  | text`, the name padded to `width` and coloured per name when
 * `color` (a terminal, and NO_COLOR unset). */
export class LinePrinter {
  private readonly colors = new Map<string, number>();
  constructor(
    private width: number,
    private readonly color: boolean,
  ) {}

  widen(name: string): void {
    this.width = Math.max(this.width, name.length);
  }

  format(l: LogLine): string {
    const name = l.who.padEnd(this.width);
    if (!this.color) return `${name} | ${l.line}`;
    let c = this.colors.get(l.who);
    if (c === undefined) {
      c = l.who === 'appswitch' ? 1 : (PALETTE[this.colors.size % PALETTE.length] ?? 36);
      this.colors.set(l.who, c);
    }
    return `\x1b[${c}m${name} |\x1b[0m ${l.line}`;
  }
}

export function useColor(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true;
}
