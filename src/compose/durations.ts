/** Durations in appswitch.yaml: a number of seconds, or a string with a unit, "500ms", "2s", "1.5s", "1m". Pure. */

/** The longest duration a file may give: one hour. */
export const MAX_DURATION_MS = 3_600_000;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/** What a bad duration is told, after its key's name. */
export const DURATION_RULE = 'must be a duration: a number of seconds or a string like "500ms", "2s", "1.5s" or "1m", more than 0 and at most 1 hour';

/** Milliseconds (an integer from 1 to MAX_DURATION_MS, rounded to the nearest ms) for a YAML value; undefined when
 * the value is not a duration or lies outside that range. */
export function parseDuration(v: unknown): number | undefined {
  let ms: number;
  if (typeof v === 'number') {
    ms = v * 1000;
  } else if (typeof v === 'string') {
    const m = /^(\d{1,9}(?:\.\d{1,9})?)(ms|s|m)$/.exec(v);
    if (!m) return undefined;
    ms = Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  } else {
    return undefined;
  }
  if (!Number.isFinite(ms)) return undefined;
  const r = Math.round(ms);
  return r >= 1 && r <= MAX_DURATION_MS ? r : undefined;
}
