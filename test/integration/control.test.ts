/** Control API under hostile input: more than 10,000 random and mutated requests (wrong types, unknown methods,
 * prototype names, garbage bytes, invalid UTF-8, huge lines, clients that never read, clients that vanish
 * mid-line) against a real daemon. Every well-delimited line gets exactly one answer with a stable code, valid
 * requests keep working on the same connection, and afterwards the daemon answers `status` with as many open
 * descriptors as before. */
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControlMethod, METHODS, REQUIRED } from '../../src/daemon/control-protocol.js';
import { TestHost, waitFor } from '../helpers/hosts.js';

const CODES = new Set(['ERR_BAD_JSON', 'ERR_BAD_REQUEST', 'ERR_UNKNOWN_METHOD', 'ERR_BAD_PARAMS', 'ERR_TOO_LARGE']);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with FUZZ_SEED. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(SEED);
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)] as T;
const int = (n: number): number => Math.floor(rnd() * n);

/* `events` turns its connection into an event stream (no more answers on it: test/integration/events.test.ts) */
const METHOD_NAMES = Object.keys(METHODS).filter((m) => m !== 'events');
/** Methods a request without parameters can call (the others need some: REQUIRED). */
const BARE_METHODS = METHOD_NAMES.filter((m) => !(REQUIRED[m as ControlMethod]?.length));
const ODD_VALUES: unknown[] = [null, true, false, 0, -1, 1.5, 2 ** 53, -(2 ** 60), '', 'x', [], [1], {}, { a: 1 }, 'status', '__proto__', NaN];
const ODD_METHODS = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'STATUS', 'status ', '', 'x'.repeat(5000), 'apps\u0000'];

/** What the schema accepts, written independently of the daemon's validator: an object with a known string
 * method that needs no parameter, an id that is a non-negative integer if present, and params absent, null or {}. */
function isValid(line: string): boolean {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return false;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  const p = o.params;
  return (
    typeof o.method === 'string' &&
    BARE_METHODS.includes(o.method) &&
    (o.id === undefined || (typeof o.id === 'number' && Number.isSafeInteger(o.id) && o.id >= 0)) &&
    (p === undefined || p === null || (typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0))
  );
}

/** One request line (no newline inside) and whether it is a valid request. */
function requestLine(): { line: string; valid: boolean } {
  const r = rnd();
  if (r < 0.25) {
    const req: Record<string, unknown> = { id: int(1e6), method: pick(BARE_METHODS) };
    if (rnd() < 0.3) req.params = {};
    return { line: JSON.stringify(req), valid: true };
  }
  if (r < 0.45) {
    /* wrong types and odd names in every field */
    const req: Record<string, unknown> = {};
    if (rnd() < 0.8) req.id = rnd() < 0.5 ? int(100) : pick(ODD_VALUES);
    if (rnd() < 0.9) req.method = rnd() < 0.4 ? pick(ODD_METHODS) : rnd() < 0.5 ? pick(METHOD_NAMES) : pick(ODD_VALUES);
    if (rnd() < 0.5) req.params = rnd() < 0.5 ? pick(ODD_VALUES) : { [pick(['a', '__proto__', 'constructor', 'limit'])]: pick(ODD_VALUES) };
    const line = JSON.stringify(req);
    return { line, valid: isValid(line) };
  }
  if (r < 0.75) {
    /* a valid request, mutated byte by byte */
    const chars = [...JSON.stringify({ id: int(1000), method: pick(METHOD_NAMES), params: {} })];
    for (let i = 0, n = 1 + int(4); i < n; i++) {
      const at = int(chars.length);
      const op = int(3);
      if (op === 0) chars.splice(at, 1);
      else if (op === 1) chars.splice(at, 0, String.fromCharCode(32 + int(95)));
      else chars[at] = pick(['{', '}', '"', ':', ',', '[', ']', '\\', 'null', '1e999', '-']);
    }
    const line = chars.join('');
    return { line, valid: isValid(line) };
  }
  if (r < 0.9) {
    /* random printable text and JSON that is not an object */
    const t = pick([
      () => String(int(1e9)),
      () => '"a string"',
      () => '[1,2,3]',
      () => 'null',
      () => '['.repeat(1 + int(5000)),
      () => '{"a":'.repeat(1 + int(2000)),
      () => Array.from({ length: 1 + int(200) }, () => String.fromCharCode(33 + int(94))).join(''),
    ])();
    return { line: t, valid: false };
  }
  /* a valid request with a big (but allowed) amount of padding */
  return { line: JSON.stringify({ id: 7, method: 'info', pad: 'x'.repeat(int(60_000)) }), valid: true };
}

interface Answer {
  id?: number;
  result?: unknown;
  error?: { code: string; message: string };
}

/** Sends `lines` on one connection (in a few large writes) and collects one answer per line. */
function exchange(socket: string, lines: string[]): Promise<Answer[]> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    let buf = '';
    const answers: Answer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`only ${answers.length} of ${lines.length} answers`));
    }, 60_000);
    s.setEncoding('utf8');
    s.on('connect', () => {
      for (let i = 0; i < lines.length; i += 200) s.write(lines.slice(i, i + 200).join('\n') + '\n');
    });
    s.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        answers.push(JSON.parse(buf.slice(0, i)) as Answer);
        buf = buf.slice(i + 1);
      }
      if (answers.length >= lines.length) {
        clearTimeout(timer);
        s.end();
        resolve(answers);
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Writes raw bytes and returns what came back before the daemon or the timer ended it. */
function raw(socket: string, chunks: Buffer[], waitMs = 300): Promise<string> {
  return new Promise((resolve) => {
    const s = net.createConnection(socket);
    let out = '';
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
    });
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => undefined);
    setTimeout(() => {
      s.destroy();
      resolve(out);
    }, waitMs);
  });
}

let host: TestHost;
let pid = 0;
let startFds = 0;
const fdCount = (): number => readdirSync(`/proc/${pid}/fd`).length;

beforeAll(async () => {
  host = TestHost.create('ctl');
  await host.startDaemon();
  pid = host.daemon?.pid as number;
  expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('daemon'); /* `ip netns exec` exec'd the daemon */
  await new Promise((r) => setTimeout(r, 300)); /* the readiness check's connection closes */
  /* the fewest of a few reads: a sweep reading /proc/net holds a descriptor for a moment */
  const reads: number[] = [];
  for (let i = 0; i < 5; i++) {
    reads.push(fdCount());
    await new Promise((r) => setTimeout(r, 60));
  }
  startFds = Math.min(...reads);
});

afterAll(async () => {
  await host?.destroy();
});

describe('control API fuzz', () => {
  it(`answers every line of >= 10,000 random and mutated requests with a stable code (seed ${SEED})`, async () => {
    let total = 0;
    const counts: Record<string, number> = {};
    for (let conn = 0; conn < 8; conn++) {
      const reqs = Array.from({ length: 1300 }, requestLine);
      const answers = await exchange(host.socket, reqs.map((r) => r.line));
      expect(answers).toHaveLength(reqs.length);
      answers.forEach((a, i) => {
        const r = reqs[i] as { line: string; valid: boolean };
        if (r.valid) expect(a.error, r.line.slice(0, 200)).toBeUndefined();
        else {
          expect(a.result, r.line.slice(0, 200)).toBeUndefined();
          expect(CODES.has(a.error?.code ?? ''), JSON.stringify(a)).toBe(true);
        }
        const k = a.error?.code ?? 'ok';
        counts[k] = (counts[k] ?? 0) + 1;
      });
      total += reqs.length;
    }
    console.log(`control fuzz: ${total} requests, answers by code: ${JSON.stringify(counts)}`);
    expect(total).toBeGreaterThanOrEqual(10_000);
    expect(counts.ERR_UNKNOWN_METHOD).toBeGreaterThan(0);
    expect(counts.ERR_BAD_JSON).toBeGreaterThan(0);
    expect(counts.ERR_BAD_REQUEST).toBeGreaterThan(0);
    expect(counts.ERR_BAD_PARAMS).toBeGreaterThan(0);
  });

  it('an over-long line gets ERR_TOO_LARGE and the connection goes on serving', async () => {
    const answers = await exchange(host.socket, ['x'.repeat(70_000), `{"id":3,"method":"x","pad":"${'y'.repeat(2_000_000)}"}`, '{"id":4,"method":"status"}']);
    expect(answers[0]?.error?.code).toBe('ERR_TOO_LARGE');
    expect(answers[1]?.error?.code).toBe('ERR_TOO_LARGE');
    expect(answers[2]).toMatchObject({ id: 4, result: { nodeAddress: host.address } });
  });

  it('garbage bytes, invalid UTF-8, lone newlines: answers are JSON with known codes; blank lines get none', async () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < 200; i++) chunks.push(Buffer.from(Array.from({ length: 1 + int(3000) }, () => int(256))));
    chunks.push(Buffer.from([0xff, 0xfe, 0x7b, 0x0a]), Buffer.from('\n\n  \r\n\t\n'), Buffer.from('{"id":9,"method":"info"}\n'));
    const out = await raw(host.socket, chunks, 1500);
    const lines = out.trim().split('\n');
    expect(lines.length).toBeGreaterThan(10);
    for (const l of lines) {
      const a = JSON.parse(l) as Answer;
      if (a.error) expect(CODES.has(a.error.code), l).toBe(true);
    }
    expect(out).toContain('request is not UTF-8 text');
    expect(lines.at(-1)).toContain('"id":9');
  });

  it('clients that never read, and clients that vanish mid-line, cost nothing afterwards', async () => {
    const flood = Buffer.from(Array.from({ length: 20_000 }, () => '{"method":"apps"}').join('\n') + '\n');
    const ends = [];
    for (let i = 0; i < 20; i++) ends.push(raw(host.socket, [flood], 200));
    for (let i = 0; i < 50; i++) ends.push(raw(host.socket, [Buffer.from('{"id":1,"meth')], 50));
    await Promise.all(ends);
  });

  it('afterwards the daemon answers status, and its descriptors are back to the start', async () => {
    const r = await host.cli(['status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ nodeAddress: host.address });
    /* start: right after startup; the CLI's own connection is gone once it exits */
    /* one read per check: a sweep reading /proc/net holds a descriptor for a moment, so two reads may differ */
    let seen = -1;
    await waitFor(() => (seen = fdCount()) === startFds, 10_000, 100).catch(() => undefined);
    console.log(`control fuzz: daemon fds at start ${startFds}, at end ${seen}`);
    expect(seen).toBe(startFds);
  });
});
