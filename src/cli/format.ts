/** Plain-text tables for terminals. */

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function tagsText(tags: Record<string, string>): string {
  const t = Object.entries(tags).map(([k, v]) => `${k}=${v}`);
  return t.length ? t.join(',') : '-';
}
