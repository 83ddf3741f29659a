/** Egress policy: which apps may reach which addresses outside the application network, by tag. A rule names the
 * tags an app must carry (every K=V of the rule, judged on the app's effective tags: zone=default when it has none)
 * or `*` (every app), and the networks it may reach. No rule at all allows everything (appswitch's behaviour before
 * egress policy); with rules, a destination is allowed when some rule matches both the app and the address, and
 * denied otherwise. Rules come from `--egress-allow KEY=VALUE=CIDR` / `*=CIDR` and from `--egress-rules FILE` (YAML
 * or JSON: a list of {tags, cidrs}). Pure: parses text it is given and decides; reads no file itself. */
import ipaddr from 'ipaddr.js';
import { parseAllDocuments, LineCounter, isMap, isSeq, isScalar, type Node as YamlNode } from 'yaml';
import { effectiveTags, type Tags } from './policy.js';

/** One rule: apps carrying all of `tags` (undefined: every app) may reach `cidrs`. */
export interface EgressRule {
  tags?: Readonly<Record<string, string>>;
  cidrs: readonly string[];
}

/** Where a rule came from, for the log ("--egress-allow grp=pay=...", "rules.yaml:3"). */
export interface SourcedRule extends EgressRule {
  source: string;
}

export interface EgressDecision {
  allow: boolean;
  /** Why, for the log line. */
  reason: string;
}

/** A bad rule: `where` is the flag or `file:line`. */
export class EgressRuleError extends Error {
  constructor(
    readonly where: string,
    what: string,
  ) {
    super(`${where}: ${what}`);
    this.name = 'EgressRuleError';
  }
}

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Parses a CIDR (an address alone is a /32 or /128); throws EgressRuleError. Returns the canonical text. */
function parseCidr(where: string, s: string): { text: string; range: Range } {
  const t = s.trim();
  try {
    const addr = t.split('/')[0] ?? '';
    if (!addr.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(addr)) throw new Error('not dotted quad'); /* no 1.2.3 */
    if (t.includes('/')) {
      const r = ipaddr.parseCIDR(t);
      const net = r[0].kind() === 'ipv6' && (r[0] as ipaddr.IPv6).isIPv4MappedAddress() ? null : r;
      if (!net) throw new Error('mapped');
      return { text: `${r[0].toString()}/${r[1]}`, range: r };
    }
    const a = ipaddr.process(t);
    const bits = a.kind() === 'ipv4' ? 32 : 128;
    return { text: `${a.toString()}/${bits}`, range: [a, bits] };
  } catch {
    throw new EgressRuleError(where, `${JSON.stringify(s)} is not a CIDR (e.g. 203.0.113.0/24)`);
  }
}

/** `--egress-allow KEY=VALUE=CIDR` (or `*=CIDR`): one rule. The CIDR is after the last `=`; KEY=VALUE before it. */
export function parseEgressAllow(s: string): SourcedRule {
  const where = `--egress-allow ${s}`;
  const i = s.lastIndexOf('=');
  if (i <= 0) throw new EgressRuleError(where, 'expected KEY=VALUE=CIDR or *=CIDR');
  const who = s.slice(0, i);
  const cidr = parseCidr(where, s.slice(i + 1)).text;
  if (who === '*') return { cidrs: [cidr], source: where };
  const j = who.indexOf('=');
  if (j <= 0) throw new EgressRuleError(where, 'expected KEY=VALUE=CIDR or *=CIDR (a tag needs its =)');
  return { tags: { [who.slice(0, j)]: who.slice(j + 1) }, cidrs: [cidr], source: where };
}

/** Tags of a file rule: a map {K: V}, "K=V" or a list of "K=V", or "*". */
function fileTags(where: string, v: unknown): Record<string, string> | undefined {
  if (v === '*') return undefined;
  const out: Record<string, string> = {};
  const one = (kv: unknown): void => {
    if (typeof kv !== 'string' || kv.indexOf('=') <= 0) throw new EgressRuleError(where, `tag ${JSON.stringify(kv)} is not K=V`);
    const j = kv.indexOf('=');
    out[kv.slice(0, j)] = kv.slice(j + 1);
  };
  if (typeof v === 'string') one(v);
  else if (Array.isArray(v)) v.forEach(one);
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (typeof x !== 'string' && typeof x !== 'number' && typeof x !== 'boolean') throw new EgressRuleError(where, `tag ${k}: value must be a string`);
      out[k] = String(x);
    }
  } else throw new EgressRuleError(where, 'tags must be "*", "K=V", a list of "K=V" or a map');
  if (!Object.keys(out).length) throw new EgressRuleError(where, 'tags is empty (use "*" for every app)');
  return out;
}

/** One rule of a file from its plain value (an object with tags and cidrs, nothing else). */
function fileRule(where: string, v: unknown): SourcedRule {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new EgressRuleError(where, 'a rule is a map with tags and cidrs');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'tags' && k !== 'cidrs') throw new EgressRuleError(where, `unknown key ${JSON.stringify(k)} (a rule has tags and cidrs)`);
  if (!('tags' in o)) throw new EgressRuleError(where, 'a rule needs tags ("*" for every app)');
  const list = typeof o.cidrs === 'string' ? [o.cidrs] : o.cidrs;
  if (!Array.isArray(list) || !list.length) throw new EgressRuleError(where, 'a rule needs cidrs: a non-empty list');
  const cidrs = list.map((c) => {
    if (typeof c !== 'string') throw new EgressRuleError(where, `cidr ${JSON.stringify(c)} is not a string`);
    return parseCidr(where, c).text;
  });
  const r: SourcedRule = { cidrs, source: where };
  const tags = fileTags(where, o.tags);
  if (tags) r.tags = tags;
  return r;
}

/** Parses the text of an `--egress-rules` file (YAML, of which JSON is a subset): a list of rules, or a map with one
 * key `rules` holding that list. Errors name `file:line`. */
export function parseEgressRules(text: string, file: string): SourcedRule[] {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc });
  if (!Array.isArray(docs)) throw new EgressRuleError(`${file}:1`, 'not a YAML document');
  if (docs.length === 0) return [];
  if (docs.length > 1) throw new EgressRuleError(`${file}:${lc.linePos(docs[1]?.range[0] ?? 0).line}`, 'one document expected');
  const doc = docs[0];
  if (!doc) return [];
  const err = doc.errors[0];
  if (err) throw new EgressRuleError(`${file}:${err.linePos?.[0].line ?? 1}`, err.message.split('\n')[0] ?? 'YAML error');
  const lineOf = (n: YamlNode | null | undefined): string => `${file}:${n?.range ? lc.linePos(n.range[0]).line : 1}`;
  let list: YamlNode | null | undefined = doc.contents;
  if (list === null || list === undefined) return [];
  if (isMap(list)) {
    const keys = list.items.map((p) => (isScalar(p.key) ? p.key.value : p.key));
    if (keys.length !== 1 || keys[0] !== 'rules') throw new EgressRuleError(lineOf(list), 'expected a list of rules (or rules: [...])');
    list = list.items[0]?.value as YamlNode | null | undefined;
  }
  if (!isSeq(list)) throw new EgressRuleError(lineOf(list), 'expected a list of rules');
  return list.items.map((item) => fileRule(lineOf(item as YamlNode), (item as YamlNode | null)?.toJSON?.() ?? item));
}

/** Decides egress: pure, never throws. Built once from the rules; empty = allow all. */
export class EgressPolicy {
  private readonly rules: Array<{ rule: SourcedRule; ranges: Range[] }>;

  constructor(rules: readonly SourcedRule[]) {
    this.rules = rules.map((rule) => ({ rule, ranges: rule.cidrs.map((c) => parseCidr(rule.source, c).range) }));
  }

  /** Whether there is any rule (without, everything is allowed). */
  get restricts(): boolean {
    return this.rules.length > 0;
  }

  get size(): number {
    return this.rules.length;
  }

  /** May an app with `tags` reach `ip`? */
  decide(tags: Tags, ip: string): EgressDecision {
    if (!this.rules.length) return { allow: true, reason: 'no egress rules' };
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.process(ip);
    } catch {
      return { allow: false, reason: 'not an IP address' };
    }
    const eff = effectiveTags(tags);
    for (const { rule, ranges } of this.rules) {
      if (rule.tags && !Object.entries(rule.tags).every(([k, v]) => eff[k] === v)) continue;
      for (const r of ranges) {
        if (r[0].kind() === addr.kind() && addr.match(r)) return { allow: true, reason: `rule ${rule.source}` };
      }
    }
    return { allow: false, reason: 'no egress rule matches the app and the destination' };
  }
}
