/** `appswitch daemon --config FILE`: the accepted keys come from the `daemon` command's own options, so a flag
 * added to that command works in the file with no other edit; flags given on the command line win over the file. */
import { readFileSync } from 'node:fs';
import type { Command, Option } from 'commander';
import { type ConfigKey, type ConfigFileValues, parseConfigText } from '../daemon/config-file.js';
import { type DaemonFlags, FlagDependencyError, resolveConfig } from '../daemon/config.js';
import { AppswitchError } from '../errors.js';

/** Options that make no sense inside the file (`private`: a mode of the command line, which picks the defaults of
 * other keys; `appswitch up` starts it so, docs/private-daemon.md). */
const NOT_IN_FILE = new Set(['config', 'help', 'version', 'private']);

/** The file key of an option: its long name without dashes, and without `no-` for a negated boolean. */
export function keyOf(o: Option): string | undefined {
  const long = o.long?.replace(/^--/, '');
  if (!long) return undefined;
  return o.negate ? long.replace(/^no-/, '') : long;
}

/** One row per option a config file accepts: key, kind, choices, default and help text (README reference). */
export interface ConfigKeyDoc extends ConfigKey {
  flags: string;
  description: string;
  defaultValue: unknown;
}

/** The keys a daemon config file accepts, derived from the command's options. */
export function configKeys(cmd: Command): ConfigKeyDoc[] {
  const keys: ConfigKeyDoc[] = [];
  for (const o of cmd.options) {
    const key = keyOf(o);
    if (!key || NOT_IN_FILE.has(key)) continue;
    const takesValue = o.required || o.optional;
    const kind: ConfigKey['kind'] = !takesValue ? 'boolean' : o.variadic || Array.isArray(o.defaultValue) ? 'list' : 'value';
    const attr = o.attributeName();
    const k: ConfigKeyDoc = {
      key,
      attr,
      kind,
      flags: o.flags,
      description: o.description,
      defaultValue: o.negate ? true : o.defaultValue,
      check: (value) => checkOne(attr, value),
    };
    if (o.argChoices) k.choices = o.argChoices;
    const parseArg = o.parseArg as ((v: string, prev: unknown) => unknown) | undefined;
    if (parseArg) k.parse = (v, prev) => parseArg.call(o, v, prev);
    keys.push(k);
  }
  return keys;
}

/** Validates one value the way the daemon will (resolveConfig), in isolation, so the error can name its line. A value
 * refused only for want of another flag (FlagDependencyError: `--gateway-address needs --gateway`) is not judged
 * alone: the other may be further down the file, and resolveConfig checks the whole set after (annotate() then names
 * the line). */
function checkOne(attr: string, value: unknown): string | undefined {
  try {
    resolveConfig({ [attr]: value } as DaemonFlags);
    return undefined;
  } catch (e) {
    if (!(e instanceof AppswitchError) || e instanceof FlagDependencyError) return undefined;
    return e.message.replace(/^--[a-z0-9-]+:?\s*/, '');
  }
}

/** Reads and checks a config file against the command's options. Throws ERR_CONFIG naming file, line and key. */
export function readConfigFile(file: string, cmd: Command): ConfigFileValues {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseConfigText(text, file, configKeys(cmd));
}

/**
 * Folds `--config FILE` into the command's option values: a value from the file is used unless the option came
 * from the command line (or the environment). Returns the merged options and the file's values (for
 * annotating later errors with their line), or no values when --config was not given: no file is read implicitly.
 */
export function applyConfigFile(cmd: Command): { opts: Record<string, unknown>; file?: string; values: ConfigFileValues } {
  const file = cmd.getOptionValue('config') as string | undefined;
  if (file === undefined) return { opts: cmd.opts(), values: new Map() };
  const values = readConfigFile(file, cmd);
  for (const v of values.values()) {
    const src = cmd.getOptionValueSource(v.attr);
    if (src === 'cli' || src === 'env') continue;
    cmd.setOptionValueWithSource(v.attr, v.value, 'config');
  }
  return { opts: cmd.opts(), file, values };
}

/** Adds `FILE:LINE:` to a config error about a flag whose value came from the file. */
export function annotate(e: unknown, file: string | undefined, values: ConfigFileValues): unknown {
  if (!file || !(e instanceof AppswitchError) || e.code !== 'ERR_CONFIG') return e;
  const m = /--([a-z0-9-]+)/.exec(e.message);
  const v = m ? [...values.values()].find((x) => x.key === m[1]) : undefined;
  return v ? new AppswitchError('ERR_CONFIG', `${file}:${v.line}: ${e.message}`) : e;
}
