/** Operations CLI against a real daemon started from a YAML config file in a test namespace: status, version,
 * get apps|services|members|connections in table and --json form, with a server and clients under appswitch
 * holding open connections (one fast path, one TCP). */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_KEYS } from '../../src/cli/ops.js';
import type { ChildProcess } from 'node:child_process';
import { CLI, killTree, TestHost, waitFor } from '../helpers/hosts.js';

const SERVER = `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8000))
s.listen(16)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
`;
/* a long command line, so that the COMMAND column has to be cut to fit 80 columns */
const CLIENT = `
import socket, time  # ${'x'.repeat(120)}
c = socket.create_connection(('10.0.0.5', 8000))
print('connected', flush=True)
time.sleep(120)
`;

interface Row {
  [k: string]: unknown;
}

let host: TestHost;
let file: string;

async function json(args: string[]): Promise<Row[]> {
  const r = await host.cli([...args, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Row[];
}

async function text(args: string[]): Promise<string[]> {
  const r = await host.cli(args);
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trimEnd().split('\n');
  for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(80);
  return lines;
}

beforeAll(async () => {
  host = TestHost.create('ops');
  file = path.join(host.stateDir, 'config.yaml');
  writeFileSync(
    file,
    [
      '# every daemon flag can live here; the command line wins',
      `state-dir: ${host.stateDir}`,
      `node-address: ${host.address}`,
      'node-name: ops-node',
      'vip-cidr:',
      '  - 10.0.0.0/8',
      'log-level: info',
      'sweep-interval: 100',
      'gossip-profile: local',
      'dns-port: 5353',
      'fastpath: true',
      '',
    ].join('\n'),
  );
  const d = host.spawn(['node', CLI, 'daemon', '--config', file, '--node-name', 'ops-cli']);
  host.daemon = d;
  d.stdout?.on('data', (b: Buffer) => (host.daemonLog += b.toString()));
  d.stderr?.on('data', (b: Buffer) => (host.daemonLog += b.toString()));
  await waitFor(async () => (await host.cli(['status', '--json'])).code === 0, 15_000, 100);
});

afterAll(async () => {
  await host?.destroy();
});

describe('daemon from a config file', () => {
  it('runs with the file values, the command-line flag overriding one', async () => {
    const s = (await json(['status'])) as unknown as Row;
    expect(s.node).toBe('ops-cli'); /* --node-name on the command line beat node-name in the file */
    expect(s.nodeAddress).toBe(host.address);
    expect(s.vipCidrs).toEqual(['10.0.0.0/8']);
    expect(s.fastpath).toBe(true);
    await host.waitForLog('daemon started');
  });

  it('refuses an invalid file, naming the line and the key, and does not start', async () => {
    const bad = path.join(host.stateDir, 'bad.yaml');
    writeFileSync(bad, `state-dir: ${host.stateDir}/other\nnode-address: ${host.address}\ndns-port: 70000\n`);
    const r = await host.cli(['daemon', '--config', bad]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`${bad}:3: dns-port: 70000 is not a port`);
  });
});

describe('get, status, version', () => {
  let serverApp = '';
  let server: ChildProcess;
  const clients: ChildProcess[] = [];

  beforeAll(async () => {
    server = host.run(['--ip', '10.0.0.5', '--name', 'holder'], ['python3', '-c', SERVER]);
    await host.waitService('10.0.0.5', 8000);
    for (const extra of [[], ['--no-fastpath']]) {
      const c = host.run(['--ip', extra.length ? '10.0.0.10' : '10.0.0.9', ...extra], ['python3', '-c', CLIENT]);
      clients.push(c);
      await new Promise<void>((resolve, reject) => {
        let out = '';
        c.stdout?.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('connected')) resolve();
        });
        c.on('close', (code) => reject(new Error(`client exited ${String(code)}`)));
      });
    }
    serverApp = String((await json(['get', 'apps'])).find((a) => a.name === 'holder')?.id);
  });

  it('get apps: fixed JSON keys; a table that fits 80 columns with the long command cut', async () => {
    const apps = await json(['get', 'apps']);
    expect(apps).toHaveLength(3);
    for (const a of apps) expect(Object.keys(a)).toEqual([...JSON_KEYS.apps]);
    const holder = apps.find((a) => a.name === 'holder') as Row;
    expect(holder.ip).toBe('10.0.0.5');
    expect(holder.services).toEqual(['10.0.0.5:8000/tcp']);
    expect(apps.find((a) => a.ip === '10.0.0.9')?.name).toBeNull(); /* absent -> null, the key stays */
    const lines = await text(['get', 'apps']);
    expect(lines[0]).toMatch(/^ID\s+PID\s+IP\s+NAME\s+TAGS\s+SERVICES\s+COMMAND$/);
    expect(lines).toHaveLength(4);
    expect(lines.some((l) => l.includes('10.0.0.9') && l.endsWith('…'))).toBe(true);
  });

  it('get services', async () => {
    const svcs = await json(['get', 'services']);
    expect(svcs).toHaveLength(1);
    expect(Object.keys(svcs[0] as Row)).toEqual([...JSON_KEYS.services]);
    expect(svcs[0]).toMatchObject({ vip: '10.0.0.5', port: 8000, proto: 'tcp', name: 'holder', node: 'ops-cli', app: serverApp });
    const lines = await text(['get', 'services']);
    expect(lines[0]).toMatch(/^VIP\s+PORT\s+PROTO\s+NAME\s+ENDPOINT\s+NODE\s+APP\s+TAGS$/);
    expect(lines[1]).toMatch(/^10\.0\.0\.5\s+8000\s+tcp\s+holder\s+192\.0\.2\.1:\d+\s+ops-cli/);
  });

  it('get members', async () => {
    const ms = await json(['get', 'members']);
    expect(ms).toEqual([{ name: 'ops-cli', address: expect.stringContaining(host.address), state: 'alive', incarnation: expect.any(Number) }]);
    const lines = await text(['get', 'members']);
    expect(lines[1]).toMatch(/^ops-cli\s+192\.0\.2\.1:\d+\s+alive\s+\d+$/);
  });

  it('get connections: the fast-path and the TCP connection, client -> service -> endpoint, then gone when closed', async () => {
    const cs = (await waitFor(async () => {
      const l = await json(['get', 'connections']);
      return l.length === 2 && l.every((c) => c.accepted) ? l : undefined;
    })) as Row[];
    for (const c of cs) expect(Object.keys(c)).toEqual([...JSON_KEYS.connections]);
    const fast = cs.find((c) => c.client === '10.0.0.9') as Row;
    const tcp = cs.find((c) => c.client === '10.0.0.10') as Row;
    expect(fast).toMatchObject({ direction: 'out', path: 'fastpath', service: '10.0.0.5:8000', serverApp, serverNode: 'ops-cli', accepted: true });
    expect(tcp).toMatchObject({ direction: 'out', path: 'tcp', service: '10.0.0.5:8000', serverApp, accepted: true });
    expect(tcp.endpoint).toMatch(/^192\.0\.2\.1:\d+$/);
    expect(tcp.clientEndpoint).toMatch(/^192\.0\.2\.1:\d+$/);
    expect(typeof tcp.ageSeconds).toBe('number');
    const lines = await text(['get', 'connections']);
    expect(lines[0]).toMatch(/^DIR\s+PATH\s+CLIENT\s+SERVICE\s+ENDPOINT\s+SERVER\s+AGE$/);
    expect(lines.some((l) => /^out\s+fastpath\s+10\.0\.0\.9\s+10\.0\.0\.5:8000/.test(l))).toBe(true);
    expect(lines.some((l) => /^out\s+tcp\s+10\.0\.0\.10\s+10\.0\.0\.5:8000/.test(l))).toBe(true);

    const st = (await json(['status'])) as unknown as Row;
    expect(st.openConnections).toEqual({ tcp: 1, fastpath: 1 });

    /* the clients go: the TCP entry goes (the client closed its socket); the fast-path one stays while the server
     * holds its end of the socket pair, and goes with the server */
    for (const c of clients) killTree(c, 'SIGKILL');
    const left = (await waitFor(async () => {
      const l = await json(['get', 'connections']);
      return l.length === 1 ? l : undefined;
    })) as Row[];
    expect(left[0]).toMatchObject({ path: 'fastpath', client: '10.0.0.9' });
    killTree(server, 'SIGKILL');
    await waitFor(async () => (await json(['get', 'connections'])).length === 0, 10_000, 200);
  });

  it('status: fixed keys; members by state, apps, services, traps; a table within 80 columns', async () => {
    const s = (await json(['status'])) as unknown as Row;
    expect(Object.keys(s)).toEqual([...JSON_KEYS.status]);
    expect(s.memberStates).toEqual({ alive: 1 });
    expect(s.traps as number).toBeGreaterThan(0);
    expect(typeof s.trapsPerSecond).toBe('number');
    const lines = await text(['status']);
    expect(lines.join('\n')).toMatch(/^members\s+1 alive$/m);
    expect(lines.join('\n')).toMatch(/traps\s+[\d.]+\/s \(last 10 s\), \d+ since start/);
  });

  it('version: package, node, kernel, seccomp features, the daemon', async () => {
    const r = await host.cli(['version', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const v = JSON.parse(r.stdout) as Row;
    expect(v.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(v.node).toBe(process.version);
    expect(v.daemon).toBe(v.version);
    expect(v.userNotif).toBe(true);
    expect(Object.keys(v.seccomp as Row)).toContain('SYNC_WAKE_UP');
    const lines = await text(['version']);
    expect(lines[0]).toBe(`appswitch ${String(v.version)}`);
  });
});
