/** One service of an appswitch.yaml: its map of keys checked one by one, in file order (so the first complaint is
 * the earliest line), into a ServiceSpec. The only I/O is the stat of a `cwd:` the file names. */
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import ipaddr from 'ipaddr.js';
import { isMap, isScalar, isSeq, type Node as YamlNode } from 'yaml';
import { MAX_EXPOSE_PER_APP, parseExpose } from '../gateway/exposures.js';
import { parseTags } from '../trap/apps.js';
import { DURATION_RULE, parseDuration } from './durations.js';
import { q } from './file-error.js';
import type { PortSpec, Ready, ReadyCheck, RestartPolicy, ServiceSpec } from './types.js';
import { describe, scalarText, type Entry, type YamlReader } from './yaml-reader.js';

/** The keys a service may have, in the order the docs list them. */
export const SERVICE_KEYS = ['command', 'ip', 'tags', 'env', 'cwd', 'replicas', 'ports', 'ready', 'depends_on', 'restart', 'stop_timeout'] as const;
const READY_KEYS = ['tcp', 'http', 'path', 'command', 'interval', 'timeout'] as const;
const READY_KINDS = ['tcp', 'http', 'command'] as const;

/** A service name: a DNS label of at most 40 characters, lower case, no dots (appswitch up makes NAME.PROJECT). */
export const SERVICE_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** What the daemon's tag rules accept (parseTags), said for people. */
const TAG_RULE = 'a key of 1-63 letters, digits or _ . - /, a value of up to 63 of those or :';
export const MAX_REPLICAS = 32;
/** The tag key appswitch up sets itself (project=NAME) on every service. */
export const RESERVED_TAG = 'project';

/** What the services of one file must not share, filled in as they are read. */
export interface FileClaims {
  /** normalised vip -> the service that has it */
  ips: Map<string, string>;
  /** host port -> the service that has it */
  hostPorts: Map<number, string>;
}

/** A service as read, with the lines its dependencies were named on (for the checks across services). */
export interface ReadService {
  spec: ServiceSpec;
  dependsOnLines: number[];
}

/** Reads service `name` (its key at `line`, its value `node`). `dir` is the file's directory. */
export function readService(r: YamlReader, name: string, line: number, node: YamlNode | null, dir: string, claims: FileClaims): ReadService {
  const svc = `service ${q(name)}`;
  if (!SERVICE_NAME_RE.test(name)) {
    r.fail(line, `service name ${q(name)} is not valid: 1 to 40 lower-case letters, digits or '-', starting and ending with a letter or digit (no dots: appswitch up names it NAME.PROJECT)`);
  }
  if (!isMap(node)) r.fail(node ?? line, `${svc} must be a map of keys (command: ..., and more), not ${describe(node)}`);
  const spec: ServiceSpec = { name, command: [], tags: {}, env: {}, cwd: dir, replicas: 1, ports: [], dependsOn: [], restart: 'no', stopTimeoutMs: 10_000, line };
  let dependsOnLines: number[] = [];
  let hasCommand = false;
  const at = (e: Entry): string => `${svc}: ${e.key}`;
  for (const e of r.entries(node, `in ${svc}`)) {
    r.knownKey(e, SERVICE_KEYS, `in ${svc}`);
    switch (e.key as (typeof SERVICE_KEYS)[number]) {
      case 'command':
        spec.command = readCommand(r, e, at(e));
        hasCommand = true;
        break;
      case 'ip':
        spec.ip = readIp(r, e, at(e), name, claims);
        break;
      case 'tags':
        spec.tags = readTags(r, e, svc);
        break;
      case 'env':
        spec.env = readEnv(r, e, svc);
        break;
      case 'cwd':
        spec.cwd = readCwd(r, e, at(e), dir);
        break;
      case 'replicas': {
        const n = isScalar(e.value) ? e.value.value : undefined;
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_REPLICAS) {
          r.fail(e.line, `${at(e)} must be an integer from 1 to ${MAX_REPLICAS}, not ${describe(e.value)}`);
        }
        spec.replicas = n;
        break;
      }
      case 'ports':
        spec.ports = readPorts(r, e, at(e), name, claims);
        break;
      case 'ready':
        spec.ready = readReady(r, e, svc);
        break;
      case 'depends_on':
        ({ names: spec.dependsOn, lines: dependsOnLines } = readDependsOn(r, e, svc, name));
        break;
      case 'restart':
        spec.restart = readRestart(r, e, at(e));
        break;
      case 'stop_timeout':
        spec.stopTimeoutMs = readDuration(r, e, at(e));
        break;
    }
  }
  if (!hasCommand) r.fail(line, `${svc} has no command (command: a string run by /bin/sh -c, or a list of strings)`);
  return { spec, dependsOnLines };
}

/** A string (run by /bin/sh -c) or a non-empty list of strings (an argv; numbers and booleans as written). */
function readCommand(r: YamlReader, e: Entry, what: string): string[] {
  const rule = 'a string (run by /bin/sh -c) or a non-empty list of strings';
  if (isSeq(e.value)) {
    if (e.value.items.length === 0) r.fail(e.line, `${what} is an empty list; it must be ${rule}`);
    const argv = e.value.items.map((item, i) => {
      const n = r.resolve(item, e.line);
      const s = scalarText(n);
      if (s === undefined) r.fail(n ?? e.line, `${what}: item ${i + 1} must be a string, not ${describe(n)}`);
      if (s.includes('\0')) r.fail(n ?? e.line, `${what}: item ${i + 1} holds a NUL character`);
      return s;
    });
    if (argv[0] === '') r.fail(e.line, `${what}: the program (item 1) is empty`);
    return argv;
  }
  const s = isScalar(e.value) && typeof e.value.value === 'string' ? e.value.value : undefined;
  if (s === undefined) r.fail(e.line, `${what} must be ${rule}, not ${describe(e.value)}`);
  if (s.trim() === '') r.fail(e.line, `${what} is empty`);
  if (s.includes('\0')) r.fail(e.line, `${what} holds a NUL character`);
  return ['/bin/sh', '-c', s];
}

function readIp(r: YamlReader, e: Entry, what: string, name: string, claims: FileClaims): string {
  const s = isScalar(e.value) && typeof e.value.value === 'string' ? e.value.value : undefined;
  if (s === undefined || isIP(s) === 0 || s.includes('%')) {
    r.fail(e.line, `${what} must be an IPv4 or IPv6 address (a vip, without a zone), not ${describe(e.value)}`);
  }
  let norm: string;
  try {
    norm = ipaddr.process(s).toNormalizedString();
  } catch {
    norm = s.toLowerCase(); /* net.isIP accepted it; ipaddr.js should too, but a spelling is still a key */
  }
  const other = claims.ips.get(norm);
  if (other !== undefined) r.fail(e.line, `${what} ${s} is already the ip of service ${q(other)}`);
  claims.ips.set(norm, name);
  return s;
}

/** KEY: VALUE pairs of a map, or "KEY=VALUE" items of a list, with the line of each, one at a time (so that the
 * caller's checks of an earlier pair come first). Null values are refused: an empty value is written "". */
function* pairsOf(r: YamlReader, e: Entry, what: string, where: string, itemWhat: string): Generator<{ k: string; v: string; line: number }, void, undefined> {
  if (isMap(e.value)) {
    for (const p of r.entries(e.value, where)) {
      if (p.value === null) r.fail(p.line, `${what}: ${itemWhat} ${q(p.key)} has no value (write "" for an empty one)`);
      const v = scalarText(p.value);
      if (v === undefined) r.fail(p.line, `${what}: ${itemWhat} ${q(p.key)} must be a string, number or boolean, not ${describe(p.value)}`);
      yield { k: p.key, v, line: p.line };
    }
  } else if (isSeq(e.value)) {
    for (const item of e.value.items) {
      const n = r.resolve(item, e.line);
      const s = isScalar(n) && typeof n.value === 'string' ? n.value : undefined;
      const i = s === undefined ? -1 : s.indexOf('=');
      if (s === undefined || i < 0) r.fail(n ?? e.line, `${what}: each item must be a string "KEY=VALUE", not ${describe(n)}`);
      yield { k: s.slice(0, i), v: s.slice(i + 1), line: r.line(n, e.line) };
    }
  } else if (e.value !== null) {
    r.fail(e.line, `${what} must be a map (KEY: VALUE) or a list of "KEY=VALUE", not ${describe(e.value)}`);
  }
}

function readTags(r: YamlReader, e: Entry, svc: string): Record<string, string> {
  const what = `${svc}: tags`;
  const tags: Record<string, string> = {};
  for (const { k, v, line } of pairsOf(r, e, what, `in tags of ${svc}`, 'tag')) {
    if (k === RESERVED_TAG) r.fail(line, `${what}: the tag ${q(k)} is reserved (appswitch up sets project=NAME on every service)`);
    let parsed: Record<string, string> = {};
    try {
      parsed = k.includes('=') ? {} : parseTags([`${k}=${v}`]);
    } catch {
      /* refused below */
    }
    if (parsed[k] !== v) r.fail(line, `${what}: bad tag ${q(`${k}=${v}`)} (${TAG_RULE})`);
    if (Object.hasOwn(tags, k)) r.fail(line, `${what}: the tag ${q(k)} is given twice`);
    tags[k] = v;
  }
  return tags;
}

function readEnv(r: YamlReader, e: Entry, svc: string): Record<string, string> {
  const what = `${svc}: env`;
  const env: Record<string, string> = {};
  for (const { k, v, line } of pairsOf(r, e, what, `in env of ${svc}`, 'variable')) {
    if (!ENV_NAME_RE.test(k)) r.fail(line, `${what}: ${q(k)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)`);
    if (v.includes('\0')) r.fail(line, `${what}: the value of ${k} holds a NUL character`);
    if (Object.hasOwn(env, k)) r.fail(line, `${what}: ${k} is given twice`);
    /* defined, not assigned: a variable named __proto__ is a variable, not the object's prototype */
    Object.defineProperty(env, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return env;
}

function readCwd(r: YamlReader, e: Entry, what: string, dir: string): string {
  const s = isScalar(e.value) && typeof e.value.value === 'string' ? e.value.value : undefined;
  if (s === undefined || s === '') r.fail(e.line, `${what} must be a directory (absolute, or relative to the file's), not ${describe(e.value)}`);
  if (s.includes('\0')) r.fail(e.line, `${what} holds a NUL character`);
  const abs = resolvePath(dir, s);
  let isDir: boolean;
  try {
    isDir = statSync(abs).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    r.fail(e.line, code === 'ENOENT' ? `${what} ${abs} does not exist` : `${what} ${abs} cannot be looked at (${code ?? 'error'})`);
  }
  if (!isDir) r.fail(e.line, `${what} ${abs} is not a directory`);
  return abs;
}

function readPorts(r: YamlReader, e: Entry, what: string, name: string, claims: FileClaims): PortSpec[] {
  if (!isSeq(e.value)) r.fail(e.line, `${what} must be a list of [HOSTPORT:]PORT, not ${describe(e.value)}`);
  if (e.value.items.length > MAX_EXPOSE_PER_APP) r.fail(e.line, `${what}: at most ${MAX_EXPOSE_PER_APP} ports per service`);
  const out: PortSpec[] = [];
  for (const item of e.value.items) {
    const n = r.resolve(item, e.line);
    const s = scalarText(n);
    let p: PortSpec | undefined;
    try {
      p = s === undefined ? undefined : parseExpose(s);
    } catch {
      p = undefined;
    }
    if (p === undefined) r.fail(n ?? e.line, `${what}: each item must be [HOSTPORT:]PORT with ports from 1 to 65535 (a number or a string like "18080:8080"), not ${describe(n)}`);
    const other = claims.hostPorts.get(p.hostPort);
    if (other !== undefined) {
      r.fail(n ?? e.line, other === name ? `${what}: host port ${p.hostPort} is given twice` : `${what}: host port ${p.hostPort} is already taken by service ${q(other)}`);
    }
    claims.hostPorts.set(p.hostPort, name);
    out.push({ hostPort: p.hostPort, port: p.port });
  }
  return out;
}

function readPort(r: YamlReader, e: Entry, what: string): number {
  const s = scalarText(e.value);
  const port = s !== undefined && /^\d{1,5}$/.test(s) ? Number(s) : 0;
  if (port < 1 || port > 65535) r.fail(e.line, `${what} must be a port from 1 to 65535, not ${describe(e.value)}`);
  return port;
}

function readReady(r: YamlReader, e: Entry, svc: string): Ready {
  const what = `${svc}: ready`;
  if (!isMap(e.value)) r.fail(e.line, `${what} must be a map with one of tcp, http or command (and interval, timeout), not ${describe(e.value)}`);
  let check: ReadyCheck | undefined;
  let kindKey: string | undefined;
  let path: { value: string; keyLine: number } | undefined;
  const ready: Ready = { check: { kind: 'tcp', port: 0 }, intervalMs: 500, timeoutMs: 60_000 };
  for (const p of r.entries(e.value, `in ready of ${svc}`)) {
    r.knownKey(p, READY_KEYS, `in ready of ${svc}`);
    const at = `${what}.${p.key}`;
    if ((READY_KINDS as readonly string[]).includes(p.key)) {
      if (kindKey !== undefined) r.fail(p.keyLine, `${what} has both ${kindKey} and ${p.key}: give exactly one of tcp, http or command`);
      kindKey = p.key;
    }
    switch (p.key as (typeof READY_KEYS)[number]) {
      case 'tcp':
        check = { kind: 'tcp', port: readPort(r, p, at) };
        break;
      case 'http':
        check = { kind: 'http', port: readPort(r, p, at), path: '/' };
        break;
      case 'command':
        check = { kind: 'command', command: readCommand(r, p, at) };
        break;
      case 'path': {
        const s = isScalar(p.value) && typeof p.value.value === 'string' ? p.value.value : undefined;
        /* it goes into a request line: no space or control character may end it early or add a header */
        if (s === undefined || !/^\/[\x21-\x7e]{0,1023}$/.test(s)) {
          r.fail(p.line, `${at} must be a URL path starting with "/" (printable ASCII, no spaces), not ${describe(p.value)}`);
        }
        path = { value: s, keyLine: p.keyLine };
        break;
      }
      case 'interval':
        ready.intervalMs = readDuration(r, p, at);
        break;
      case 'timeout':
        ready.timeoutMs = readDuration(r, p, at);
        break;
    }
  }
  if (check === undefined) r.fail(e.keyLine, `${what} needs one of tcp: PORT, http: PORT or command: COMMAND`);
  if (path !== undefined) {
    if (check.kind !== 'http') r.fail(path.keyLine, `${what}.path goes only with ready.http`);
    check.path = path.value;
  }
  ready.check = check;
  return ready;
}

function readDependsOn(r: YamlReader, e: Entry, svc: string, name: string): { names: string[]; lines: number[] } {
  const what = `${svc}: depends_on`;
  const names: string[] = [];
  const lines: number[] = [];
  const seen = new Set<string>();
  const add = (dep: string, line: number): void => {
    if (dep === name) r.fail(line, `service ${q(name)} depends on itself`);
    if (seen.has(dep)) r.fail(line, `${what}: ${q(dep)} is given twice`);
    seen.add(dep);
    names.push(dep);
    lines.push(line);
  };
  if (isSeq(e.value)) {
    for (const item of e.value.items) {
      const n = r.resolve(item, e.line);
      const s = isScalar(n) && typeof n.value === 'string' ? n.value : undefined;
      if (s === undefined) r.fail(n ?? e.line, `${what}: each item must be a service name, not ${describe(n)}`);
      add(s, r.line(n, e.line));
    }
  } else if (isMap(e.value)) {
    for (const dep of r.entries(e.value, `in depends_on of ${svc}`)) {
      if (dep.value !== null) {
        if (!isMap(dep.value)) r.fail(dep.line, `${what}: ${q(dep.key)} must be {condition: ready} or {condition: started}, not ${describe(dep.value)}`);
        const where = `in depends_on ${q(dep.key)} of ${svc}`;
        for (const c of r.entries(dep.value, where)) {
          r.knownKey(c, ['condition'], where);
          const v = isScalar(c.value) ? c.value.value : undefined;
          if (v !== 'ready' && v !== 'started') r.fail(c.line, `${what}: the condition of ${q(dep.key)} must be ready or started, not ${describe(c.value)}`);
        }
      }
      add(dep.key, dep.keyLine);
    }
  } else if (e.value !== null) {
    r.fail(e.line, `${what} must be a list of service names or a map {NAME: {condition: ready}}, not ${describe(e.value)}`);
  }
  return { names, lines };
}

function readRestart(r: YamlReader, e: Entry, what: string): RestartPolicy {
  const v = isScalar(e.value) ? e.value.value : undefined;
  if (v === false || v === 'no') return 'no';
  if (v === 'on-failure' || v === 'always') return v;
  r.fail(e.line, `${what} must be no, on-failure or always, not ${describe(e.value)}`);
}

function readDuration(r: YamlReader, e: Entry, what: string): number {
  const ms = parseDuration(isScalar(e.value) ? e.value.value : undefined);
  if (ms === undefined) r.fail(e.line, `${what} ${DURATION_RULE}, not ${describe(e.value)}`);
  return ms;
}
