/** Reading an appswitch.yaml's YAML: parses the text once with the `yaml` package (positions kept) and hands the
 * checkers typed views of its nodes, each with its 1-based line, so that every complaint is `FILE:LINE: message`.
 * Any YAML error or warning is the first complaint; a duplicate key is found when its map is read. Does no I/O. */
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, type Alias, type Document, type Node as YamlNode, type YAMLMap } from 'yaml';
import { ComposeFileError, q } from './file-error.js';
import { editDistance as distance } from '../edit-distance.js';

/** One key of a map: its name, the value (aliases followed; null when empty) and where each is. */
export interface Entry {
  key: string;
  keyLine: number;
  value: YamlNode | null;
  /** The value's line, or the key's when the value is empty. */
  line: number;
}

/** A parsed file and the means to complain about any of its nodes. */
export class YamlReader {
  /** What each alias of the document stands for (undefined: no anchor of its name before it); made on first use. */
  private aliasTargets: Map<Alias, YamlNode | undefined> | undefined;

  private constructor(
    readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  /** Parses `text`; throws ComposeFileError at the first YAML error (syntax, escape, ...) or warning. */
  static parse(text: string, file: string): YamlReader {
    const lines = new LineCounter();
    let doc: Document.Parsed;
    try {
      /* duplicate keys are found by entries(): the parser's own check (uniqueKeys) is quadratic in a map's size */
      doc = parseDocument(text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false });
    } catch (e) {
      /* the yaml package reports its own exhaustion as errors; this is a second line for anything it throws */
      throw new ComposeFileError(file, 1, `YAML: cannot parse the file (${(e as Error).message})`);
    }
    const reader = new YamlReader(file, doc, lines);
    const first = doc.errors[0] ?? doc.warnings[0];
    if (first) reader.fail(lines.linePos(first.pos[0]).line, `YAML: ${first.message.replace(/\s+/g, ' ').trim()}`);
    return reader;
  }

  /** The document's top node (null for an empty file). */
  get root(): YamlNode | null {
    return this.resolve(this.doc.contents as YamlNode | null, 1);
  }

  /** The 1-based line where `n` starts, or `fallback` when it has no position. */
  line(n: unknown, fallback: number): number {
    const r = (n as { range?: [number, number, number] | null } | null)?.range;
    return r ? this.lines.linePos(r[0]).line : fallback;
  }

  /** Throws ComposeFileError for a node (its line) or a line number. */
  fail(at: YamlNode | number, msg: string): never {
    throw new ComposeFileError(this.file, typeof at === 'number' ? at : this.line(at, 1), msg);
  }

  /** Follows an alias to its anchored node; an alias that names no anchor is an error. */
  resolve(n: unknown, line: number): YamlNode | null {
    if (n === null || n === undefined) return null;
    if (isAlias(n)) {
      const target = this.aliases().get(n);
      if (!target) this.fail(this.line(n, line), `alias *${n.source} names no anchor defined before it`);
      return target;
    }
    return n as YamlNode;
  }

  /** Every alias and the node it stands for: the last node anchored with its name before it, in document order
   * (YAML's rule, as Alias.resolve applies it; that one walks the whole document for each alias, so a file of many
   * aliases would take quadratic time). One walk, without recursion. */
  private aliases(): Map<Alias, YamlNode | undefined> {
    if (this.aliasTargets) return this.aliasTargets;
    const targets = new Map<Alias, YamlNode | undefined>();
    const anchors = new Map<string, YamlNode>();
    const stack: unknown[] = [this.doc.contents];
    while (stack.length > 0) {
      const n = stack.pop();
      if (isAlias(n)) {
        targets.set(n, anchors.get(n.source));
        continue;
      }
      /* an anchor sits on a scalar or a collection, never on an alias (the parser refuses that) */
      if (isNode(n) && n.anchor) anchors.set(n.anchor, n);
      /* pushed in reverse, so that they come off the stack in document order: a key before its value */
      if (isMap(n)) for (let i = n.items.length - 1; i >= 0; i--) stack.push(n.items[i]?.value, n.items[i]?.key);
      else if (isSeq(n)) for (let i = n.items.length - 1; i >= 0; i--) stack.push(n.items[i]);
    }
    this.aliasTargets = targets;
    return targets;
  }

  /** The entries of a map node, in file order; keys are names (strings, or numbers and booleans as written). Each
   * is checked (a name, not a duplicate, its alias resolved) only when it is reached, so that a caller checking
   * values as it goes reports the earliest problem in the file. */
  *entries(map: YAMLMap, where: string): Generator<Entry, void, undefined> {
    const mapLine = this.line(map, 1);
    const seen = new Map<string, number>();
    for (const pair of map.items) {
      const keyNode = this.resolve(pair.key, mapLine);
      const keyLine = this.line(keyNode, mapLine);
      const key = isScalar(keyNode) ? plainText(keyNode.value, keyNode.source) : undefined;
      if (key === undefined) this.fail(keyLine, `a key ${where} must be a name, not ${describe(keyNode)}`);
      const before = seen.get(key);
      if (before !== undefined) this.fail(keyLine, `duplicate key ${q(key)} ${where} (first on line ${before})`);
      seen.set(key, keyLine);
      const value = this.resolve(pair.value, keyLine);
      const empty = value === null || (isScalar(value) && value.value === null);
      yield { key, keyLine, value: empty ? null : value, line: empty ? keyLine : this.line(value, keyLine) };
    }
  }

  /** Refuses a key not in `known`, suggesting the nearest one (edit distance at most 2). Called for each entry as it
   * is read, so that the earliest problem in the file is the one reported. */
  knownKey(e: Entry, known: readonly string[], where: string): void {
    if (known.includes(e.key)) return;
    const near = nearest(e.key, known);
    const hint = near === undefined ? '' : `: did you mean ${q(near)}?`;
    this.fail(e.keyLine, `unknown key ${q(e.key)} ${where}${hint} (known: ${known.join(', ')})`);
  }
}

/** A scalar's text when it is a string, or a number or boolean as written in the file ("0x10" stays "0x10");
 * undefined for null and anything else (binary data, ...). */
export function plainText(value: unknown, source: string | undefined): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return source ?? String(value);
  return undefined;
}

/** The text of a scalar node (see plainText), or undefined. */
export function scalarText(n: YamlNode | null): string | undefined {
  return isScalar(n) ? plainText(n.value, n.source) : undefined;
}

/** What a node is, for messages: `a map`, `a list`, `a string ("x")`, `a number (5)`, `nothing`. */
export function describe(n: YamlNode | null | undefined): string {
  if (n === null || n === undefined) return 'nothing';
  if (isMap(n)) return 'a map';
  if (isSeq(n)) return 'a list';
  if (isScalar(n)) {
    const v = n.value;
    if (v === null) return 'nothing';
    if (typeof v === 'string') return `a string (${q(v)})`;
    if (typeof v === 'number' || typeof v === 'bigint') return `a number (${n.source ?? String(v)})`;
    if (typeof v === 'boolean') return `a boolean (${String(v)})`;
    return 'a tagged value';
  }
  return 'an alias';
}


/** The candidate nearest to `word` when it is at most 2 edits away (the first such in `candidates` order). */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > 64) return undefined;
  let best: string | undefined;
  /* and fewer edits than the word has characters: "db" is not a typo of "web" */
  let bestD = Math.min(3, word.length);
  for (const c of candidates) {
    const d = distance(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}
