/** Plain-text tables for terminals (fitted to a width, long cells cut with "…") and the fixed-key JSON rows of
 * `--json` output. */

/** Columns of a table: at most `width` characters a line (default 80); `elastic` columns shrink first. */
export interface TableOptions {
  width?: number;
  /** Indexes of columns that give up width first (commands, tags, lists); the others only when that is not enough. */
  elastic?: number[];
}

const GAP = 2;
const MIN_COL = 4;

/** One line of printable text: control characters (newlines in a `python -c` script...) become spaces. */
function flat(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f]+/g, ' ');
}

function cut(s: string, w: number): string {
  return s.length <= w ? s : w <= 1 ? s.slice(0, w) : `${s.slice(0, w - 1)}…`;
}

/** Shrinks `widths` in place (widest first) until they add up to `room`, no column narrower than its minimum. */
function shrink(widths: number[], mins: number[], cols: number[], room: number): void {
  let total = widths.reduce((a, b) => a + b, 0);
  while (total > room) {
    let widest = -1;
    for (const i of cols) if ((widths[i] as number) > (mins[i] as number) && (widest < 0 || (widths[i] as number) > (widths[widest] as number))) widest = i;
    if (widest < 0) return;
    widths[widest] = (widths[widest] as number) - 1;
    total--;
  }
}

export function table(headers: string[], rawRows: string[][], opts: TableOptions = {}): string {
  const rows = rawRows.map((r) => r.map(flat));
  const width = opts.width ?? 80;
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const mins = headers.map((h, i) => Math.min(widths[i] as number, Math.max(h.length, MIN_COL)));
  const room = width - GAP * (headers.length - 1);
  shrink(widths, mins, opts.elastic ?? [], room);
  shrink(
    widths,
    mins,
    headers.map((_, i) => i),
    room,
  );
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => {
        const w = widths[i] ?? 0;
        const t = cut(c, w);
        return i === cells.length - 1 ? t : t.padEnd(w);
      })
      .join(' '.repeat(GAP))
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function tagsText(tags: Record<string, string>): string {
  const t = Object.entries(tags).map(([k, v]) => `${k}=${v}`);
  return t.length ? t.join(',') : '-';
}

/** An object with exactly `keys`, in that order; a key the source lacks is null (stable `--json` rows). */
export function fixedKeys<K extends string>(o: object, keys: readonly K[]): Record<K, unknown> {
  const src = o as Record<string, unknown>;
  const out = {} as Record<K, unknown>;
  for (const k of keys) out[k] = src[k] === undefined ? null : src[k];
  return out;
}

/** Seconds as "42s", "5m", "3h", "2d". */
export function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}
