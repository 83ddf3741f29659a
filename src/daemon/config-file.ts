/** The daemon's YAML configuration file (`appswitch daemon --config FILE`): parsed with the `yaml` package and
 * checked key by key against a list of accepted keys, so every error names the file, the line and the key.
 * The keys are not listed here: the CLI derives them from the `daemon` command's options (one source of truth). */
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { AppswitchError } from '../errors.js';
import { editDistance as distance } from '../edit-distance.js';

/** One key the file may hold: a daemon flag's long name without `--` (`--no-fastpath` -> `fastpath`). */
export interface ConfigKey {
  /** The key in the file, e.g. `node-address`. */
  key: string;
  /** The property the value lands in (commander's attribute name), e.g. `nodeAddress`. */
  attr: string;
  /** `boolean`: a YAML boolean; `value`: one string or number; `list`: a sequence (or one scalar) of them. */
  kind: 'boolean' | 'value' | 'list';
  /** Allowed values, when the flag has a fixed set. */
  choices?: readonly string[];
  /** The flag's own argument parser (commander's `parseArg`), applied to each value as the command line would. */
  parse?: (value: string, previous: unknown) => unknown;
  /** Checks one value in isolation; returns an error text, or undefined when the value is good. */
  check?: (value: unknown) => string | undefined;
}

/** A value read from the file and where it was. */
export interface ConfigValue {
  key: string;
  attr: string;
  value: unknown;
  line: number;
}

/** The file's values, by attribute name. */
export type ConfigFileValues = Map<string, ConfigValue>;

function fail(file: string, line: number, msg: string): never {
  throw new AppswitchError('ERR_CONFIG', `${file}:${line}: ${msg}`);
}


function describe(n: YamlNode | null | undefined): string {
  if (n === null || n === undefined) return 'nothing';
  if (isMap(n)) return 'a map';
  if (isSeq(n)) return 'a list';
  if (isScalar(n)) {
    const v = n.value;
    if (v === null) return 'nothing (null)';
    if (typeof v === 'boolean') return `a boolean (${String(v)})`;
    if (typeof v === 'number') return `a number (${String(v)})`;
    return `a string ("${String(v)}")`;
  }
  return 'an alias';
}

/** A scalar usable as a flag's argument: strings as they are, numbers in decimal. */
function scalarText(n: YamlNode | null | undefined): string | undefined {
  if (!isScalar(n)) return undefined;
  if (typeof n.value === 'string') return n.value;
  if (typeof n.value === 'number' && Number.isFinite(n.value)) return String(n.value);
  return undefined;
}

/**
 * Parses a configuration file's text. Throws AppswitchError ERR_CONFIG `FILE:LINE: KEY: what is wrong` for a
 * YAML syntax error, a top level that is not a map, an unknown or duplicate key, a value of the wrong type, a
 * value outside the key's choices, or a value the key's parser or check refuses. An empty file is an empty config.
 */
export function parseConfigText(text: string, file: string, keys: readonly ConfigKey[]): ConfigFileValues {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const lineOf = (n: { range?: [number, number, number] | null } | null | undefined): number =>
    n?.range ? lines.linePos(n.range[0]).line : 1;
  const err = doc.errors[0];
  if (err) {
    const line = err.linePos?.[0]?.line ?? lines.linePos(err.pos[0]).line;
    const what = err.code === 'DUPLICATE_KEY' ? 'duplicate key' : 'YAML syntax error';
    const msg = (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    fail(file, line, `${what}: ${msg}`);
  }
  const out: ConfigFileValues = new Map();
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return out;
  if (!isMap(root)) fail(file, lineOf(root), `the file must be a map of flag names to values, not ${describe(root)}`);
  const byKey = new Map(keys.map((k) => [k.key, k]));
  for (const pair of root.items) {
    const keyNode = pair.key as YamlNode | null;
    const line = lineOf(keyNode);
    if (!isScalar(keyNode) || typeof keyNode.value !== 'string') fail(file, line, `a key must be a flag name, not ${describe(keyNode)}`);
    const name = keyNode.value;
    const spec = byKey.get(name);
    if (!spec) {
      const near = keys.map((k) => ({ k: k.key, d: distance(name, k.key) })).sort((a, b) => a.d - b.d)[0];
      const hint = near && near.d <= 3 ? ` (did you mean "${near.k}"?)` : '';
      fail(file, line, `unknown key "${name}"${hint}; keys are the daemon's long flag names (appswitch daemon --help)`);
    }
    const node = pair.value as YamlNode | null;
    const vline = node?.range ? lineOf(node) : line;
    const value = readValue(spec, node, (msg, at) => fail(file, at?.range ? lineOf(at) : vline, `${name}: ${msg}`));
    const bad = spec.check?.(value);
    if (bad !== undefined) fail(file, vline, `${name}: ${bad}`);
    out.set(spec.attr, { key: name, attr: spec.attr, value, line: vline });
  }
  return out;
}

function readValue(spec: ConfigKey, node: YamlNode | null, bad: (msg: string, at?: YamlNode) => never): unknown {
  const choose = (v: string): string => {
    if (spec.choices && !spec.choices.includes(v)) bad(`"${v}" is not one of ${spec.choices.join(', ')}`);
    return v;
  };
  const parse = (v: string, prev: unknown): unknown => {
    if (!spec.parse) return v;
    try {
      return spec.parse(v, prev);
    } catch (e) {
      return bad((e as Error).message);
    }
  };
  if (spec.kind === 'boolean') {
    if (!isScalar(node) || typeof node.value !== 'boolean') bad(`expected true or false, got ${describe(node)}`);
    return node.value;
  }
  if (spec.kind === 'list') {
    if (node === null || (isScalar(node) && node.value === null)) return [];
    const items = isSeq(node) ? (node.items as YamlNode[]) : [node];
    let acc: unknown = [];
    for (const item of items) {
      const t = scalarText(item);
      if (t === undefined) bad(`expected a list of strings, got ${isSeq(node) ? 'an item that is ' : ''}${describe(item)}`, item);
      acc = spec.parse ? parse(choose(t), acc) : [...(acc as unknown[]), choose(t)];
    }
    return acc;
  }
  const t = scalarText(node);
  if (t === undefined) bad(`expected a string or number, got ${describe(node)}`);
  return parse(choose(t), undefined);
}
