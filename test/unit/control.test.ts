/** Pure parts of the operations surface: control-request validation, 80-column tables, fixed JSON keys, the
 * connection tracker's bookkeeping, peer admission, and the README's config reference against the daemon's options. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { configKeys } from '../../src/cli/daemon-config.js';
import { fixedKeys, table } from '../../src/cli/format.js';
import { buildCli } from '../../src/cli/main.js';
import { AccessControl, processGroups } from '../../src/daemon/access.js';
import { validateRequest } from '../../src/daemon/control.js';
import { ConnectionTracker } from '../../src/trap/connections.js';

describe('validateRequest', () => {
  const code = (v: unknown): string | undefined => {
    const r = validateRequest(v);
    return 'error' in r ? r.error.code : undefined;
  };

  it('accepts known methods with no or empty params, echoing the id', () => {
    expect(validateRequest({ id: 4, method: 'status' })).toEqual({ req: { id: 4, method: 'status' } });
    expect(validateRequest({ method: 'apps', params: {} })).toEqual({ req: { id: 0, method: 'apps', params: {} } });
    expect(code({ method: 'connections', params: null })).toBeUndefined();
  });

  it('refuses what is not a request object', () => {
    for (const v of [null, 1, 'status', [], [{ method: 'status' }], true]) expect(code(v)).toBe('ERR_BAD_REQUEST');
    expect(code({})).toBe('ERR_BAD_REQUEST');
    expect(code({ method: 5 })).toBe('ERR_BAD_REQUEST');
    for (const id of [-1, 1.5, '1', null, 2 ** 53, {}]) expect(code({ id, method: 'status' })).toBe('ERR_BAD_REQUEST');
    expect(code({ method: 'status', params: [] })).toBe('ERR_BAD_REQUEST');
    expect(code({ method: 'status', params: 'x' })).toBe('ERR_BAD_REQUEST');
  });

  it('refuses unknown methods, prototype names included, and echoes the id', () => {
    for (const m of ['nope', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'STATUS', '']) {
      expect(code({ method: m })).toBe('ERR_UNKNOWN_METHOD');
    }
    expect(validateRequest({ id: 12, method: 'x'.repeat(10_000) })).toMatchObject({ id: 12, error: { code: 'ERR_UNKNOWN_METHOD' } });
    const r = validateRequest({ method: 'x'.repeat(10_000) });
    expect('error' in r && r.error.message.length).toBeLessThan(300);
  });

  it('refuses parameters a method does not take', () => {
    expect(code({ method: 'status', params: { verbose: true } })).toBe('ERR_BAD_PARAMS');
    expect(code({ method: 'apps', params: JSON.parse('{"__proto__": 1}') as object })).toBe('ERR_BAD_PARAMS');
  });
});

describe('table', () => {
  const rows = [
    ['a1b2c3d4', '4242', '10.0.0.9', 'web', 'grp=1,zone=eu-west-1,tier=frontend', '10.0.0.9:8000/tcp,10.0.0.9:8443/tcp', 'python3 -m http.server 8000 --bind 0.0.0.0 --directory /srv/www/htdocs'],
    ['e5f6a7b8', '77', '169.254.3.4', '-', '-', '-', 'curl\nhttp://web:8000/'],
  ];
  const headers = ['ID', 'PID', 'IP', 'NAME', 'TAGS', 'SERVICES', 'COMMAND'];

  it('fits 80 columns, elastic columns cut first with an ellipsis, control characters flattened', () => {
    const out = table(headers, rows, { width: 80, elastic: [6, 4, 5] }).split('\n');
    expect(out).toHaveLength(3);
    for (const l of out) expect(l.length).toBeLessThanOrEqual(80);
    expect(out[1]).toContain('10.0.0.9'); /* fixed columns stay whole */
    expect(out[1]).toContain('a1b2c3d4');
    expect(out[1]).toContain('…');
    expect(out[2]).toContain('curl http');
  });

  it('leaves a narrow table alone and fits any width down to the headers', () => {
    expect(table(['A', 'B'], [['x', 'y']])).toBe('A  B\nx  y');
    /* below 47 columns (every column at its minimum: max(header, 4) letters, plus the gaps) it cannot shrink more */
    for (const w of [40, 60, 100]) for (const l of table(headers, rows, { width: w }).split('\n')) expect(l.length).toBeLessThanOrEqual(Math.max(w, 47));
  });
});

describe('fixedKeys', () => {
  it('gives exactly the listed keys in order, null for a missing one, nothing extra', () => {
    expect(Object.entries(fixedKeys({ b: 2, extra: 1, a: undefined }, ['a', 'b', 'c']))).toEqual([
      ['a', null],
      ['b', 2],
      ['c', null],
    ]);
  });
});

describe('ConnectionTracker', () => {
  const svc = (ep: string): { service: string; app: string; node: string } | undefined =>
    ep === '192.0.2.1:40001' ? { service: '10.0.0.5:80', app: 'srv', node: 'n1' } : undefined;
  const client = { identity: '10.0.0.9', appId: 'cli' };
  const snap = (local: string[], remote: string[] = [], unix?: string[]): Parameters<ConnectionTracker['sweep']>[0] => {
    const s: Parameters<ConnectionTracker['sweep']>[0] = { tcpLocal: new Set(local), tcpRemote: new Set(remote), takenAt: Date.now() + 1 };
    if (unix) s.unixInodes = new Set(unix);
    return s;
  };

  it('tracks an out connection from CONNECTED, marks it accepted, drops it when the client socket is gone', () => {
    const t = new ConnectionTracker(svc);
    t.connected(client, { ip: '192.0.2.1', port: 50000 }, { ip: '192.0.2.1', port: 40001 }, 'tcp');
    t.accepted({ appId: 'srv' }, 'n1', { ip: '192.0.2.1', port: 50000 }, { ip: '192.0.2.1', port: 40001 }, client);
    expect(t.list()).toEqual([
      expect.objectContaining({ direction: 'out', path: 'tcp', client: '10.0.0.9', service: '10.0.0.5:80', endpoint: '192.0.2.1:40001', serverApp: 'srv', accepted: true }),
    ]);
    t.sweep(snap(['192.0.2.1:50000']));
    expect(t.size).toBe(1);
    t.sweep(snap([], ['192.0.2.1:50000'])); /* only the server's socket still has it: the client closed */
    expect(t.size).toBe(0);
  });

  it('an in connection lives while the server socket does; entries newer than the snapshot stay', () => {
    const t = new ConnectionTracker(svc);
    t.accepted({ appId: 'srv' }, 'n1', { ip: '192.0.2.7', port: 50001 }, { ip: '192.0.2.1', port: 40001 }, { identity: '10.0.0.3', appId: 'far' });
    expect(t.list()[0]).toMatchObject({ direction: 'in', client: '10.0.0.3', service: '10.0.0.5:80' });
    t.sweep(snap([], ['192.0.2.7:50001']));
    expect(t.size).toBe(1);
    t.sweep({ ...snap([]), takenAt: 0 }); /* taken before the report: keep */
    expect(t.size).toBe(1);
    t.sweep(snap([]));
    expect(t.size).toBe(0);
  });

  it('a fast-path entry lives while the inode of the server end does, or until the offer expires', () => {
    const t = new ConnectionTracker(svc);
    t.connected(client, { ip: '192.0.2.1', port: 50002 }, { ip: '192.0.2.1', port: 40001 }, 'fastpath', '777');
    t.connected(client, { ip: '192.0.2.1', port: 50003 }, { ip: '192.0.2.1', port: 40001 }, 'fastpath', '778');
    expect(t.counts()).toEqual({ tcp: 0, fastpath: 2 });
    t.sweep(snap([], [], ['777', '778']));
    expect(t.size).toBe(2);
    t.sweep(snap([], [], ['778']));
    expect(t.list().map((c) => c.clientEndpoint)).toEqual(['192.0.2.1:50003']);
    t.offerExpired('192.0.2.1:50003');
    expect(t.size).toBe(0);
  });
});

describe('AccessControl', () => {
  const log = pino({ level: 'silent' });

  it('admits root and the own user; refuses others when the group does not exist', () => {
    const a = new AccessControl('no-such-group-appswitch-test', log);
    expect(a.gid).toBeUndefined();
    expect(a.check({ pid: process.pid, uid: 0, gid: 0 })).toBeUndefined();
    expect(a.check({ pid: 1, uid: 4242, gid: 4242 })).toMatch(/uid 4242 is not root and not in group no-such-group-appswitch-test \(which does not exist\)/);
  });

  it('admits a member by primary gid, or by supplementary group of the live process with that uid', () => {
    const a = new AccessControl('root', log); /* gid 0 */
    expect(a.gid).toBe(0);
    expect(a.check({ pid: 1, uid: 4242, gid: 0 })).toBeUndefined();
    const mine = processGroups(process.pid);
    expect(mine?.groups).toContain(0);
    /* the pid's real owner (root) is not the claimed uid: a reused pid grants nothing */
    expect(a.check({ pid: process.pid, uid: 4242, gid: 4242 })).toMatch(/not in group root/);
  });
});

describe('README, Operations', () => {
  const readme = readFileSync(path.join(import.meta.dirname, '../../README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Operations'));
  const daemon = buildCli().commands.find((c) => c.name() === 'daemon') as Command;

  it('has the sections the issue asks for, Metrics included', () => {
    for (const h of ['## Operations', '### Install', '### Config file', '### Metrics', '### Troubleshooting']) expect(readme).toContain(h);
  });

  it('the config reference lists every daemon option, and nothing that is not one', () => {
    const table = section.slice(section.indexOf('### Config file'), section.indexOf('\n### ', section.indexOf('### Config file') + 5));
    const listed = [...table.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    const keys = configKeys(daemon).map((k) => k.key);
    expect(listed.length).toBeGreaterThan(0);
    for (const k of keys) expect(listed, `README config table lacks "${k}"`).toContain(k);
    for (const k of listed) expect(keys, `README config table lists "${k}", which is no daemon option`).toContain(k);
  });
});
