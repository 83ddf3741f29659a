/** Operations: the Prometheus endpoint (`--metrics-address`) and the daemon's log lines, end to end: a real daemon in
 * a namespace this file creates and removes, real programs under appswitch, scraped with curl. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;
const PORT = 9464;

beforeAll(async () => {
  h = TestHost.create('metrics');
  await h.startDaemon(['--metrics-address', `${h.address}:${PORT}`]);
});

afterAll(async () => {
  await h?.destroy();
});

/** One scrape: series text (name plus labels as exposed) -> value. */
async function scrape(): Promise<Map<string, number>> {
  const r = await h.exec(['curl', '-sS', '-m', '5', '-D', '-', `http://${h.address}:${PORT}/metrics`]);
  expect(r.code, r.stderr).toBe(0);
  const end = r.stdout.indexOf('\r\n\r\n');
  const head = r.stdout.slice(0, end);
  const body = r.stdout.slice(end + 4);
  expect(head).toMatch(/^HTTP\/1\.1 200/);
  expect(head).toMatch(/content-type: text\/plain; version=0\.0\.4/i);
  const m = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

/** Scrapes until `ok` holds (counters from generators arrive within a second, or when they exit). */
async function scrapeUntil(ok: (m: Map<string, number>) => boolean): Promise<Map<string, number>> {
  let last = new Map<string, number>();
  await waitFor(async () => ok((last = await scrape())), 10_000, 200);
  return last;
}

/** accept and accept4 traps answered with a connection (python's accept() is accept4). */
function accepts(m: Map<string, number>): number {
  return sum(m, 'appswitch_traps_total', { syscall: 'accept', result: 'ok' }) + sum(m, 'appswitch_traps_total', { syscall: 'accept4', result: 'ok' });
}

function val(m: Map<string, number>, series: string): number {
  return m.get(series) ?? 0;
}

/** The sum over every series of a metric whose labels include all of `labels`. */
function sum(m: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let s = 0;
  for (const [k, v] of m) {
    if (k !== name && !k.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([l, x]) => k.includes(`${l}="${x}"`))) s += v;
  }
  return s;
}

interface LogLine {
  msg: string;
  level: number;
  [k: string]: unknown;
}

function logLines(msg: string): LogLine[] {
  return h.daemonLog
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.msg === msg);
}

describe('metrics endpoint', () => {
  it('has HELP for every appswitch_ metric, the default process metrics, and answers 404 elsewhere', async () => {
    const r = await h.exec(['curl', '-sS', '-m', '5', `http://${h.address}:${PORT}/metrics`]);
    for (const name of [
      'appswitch_traps_total',
      'appswitch_trap_duration_seconds',
      'appswitch_services',
      'appswitch_members',
      'appswitch_gossip_messages_total',
      'appswitch_gossip_bytes_total',
      'appswitch_policy_denials_total',
      'appswitch_connections_total',
      'appswitch_daemon_open_fds',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    }
    expect(r.stdout).toMatch(/^process_cpu_seconds_total /m);
    expect(r.stdout).toMatch(/^nodejs_eventloop_lag_seconds /m);
    const nf = await h.exec(['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${h.address}:${PORT}/`]);
    expect(nf.stdout).toBe('404');
  });

  it('counts traps, connections by kind, services, members and fds as programs run', async () => {
    const before = await scrape();
    expect(val(before, 'appswitch_members{state="alive"}')).toBe(1);
    expect(val(before, 'appswitch_daemon_open_fds')).toBeGreaterThan(0);
    const srv = h.run(['--ip', '10.0.0.5', '--name', 'web', '--tag', 'grp=1'], ['python3', '-u', '-m', 'http.server', '8000']);
    const out = finish(srv, 60_000);
    try {
      await h.waitService('10.0.0.5', 8000);
      const up = await scrape();
      expect(val(up, 'appswitch_services{scope="local"}')).toBe(val(before, 'appswitch_services{scope="local"}') + 1);
      expect(val(up, 'appswitch_services{scope="remote"}')).toBe(0);
      const fast = await h.runToEnd(['--tag', 'grp=1'], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.5:8000/']);
      expect(fast.stdout, fast.stderr).toBe('200');
      const tcp = await h.runToEnd(['--tag', 'grp=1', '--no-fastpath'], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.5:8000/']);
      expect(tcp.stdout, tcp.stderr).toBe('200');
      // the clients' counters arrive when they exit; the server's within a second of its accepts
      const after = await scrapeUntil((m) => accepts(m) - accepts(before) >= 2);
      const d = (name: string, labels: Record<string, string>): number => sum(after, name, labels) - sum(before, name, labels);
      expect(d('appswitch_connections_total', { kind: 'fastpath' })).toBe(1);
      expect(d('appswitch_connections_total', { kind: 'tcp' })).toBe(1);
      expect(d('appswitch_traps_total', { syscall: 'bind', result: 'ok' })).toBeGreaterThanOrEqual(1);
      expect(d('appswitch_traps_total', { syscall: 'listen', result: 'ok' })).toBeGreaterThanOrEqual(1);
      expect(d('appswitch_traps_total', { syscall: 'connect' })).toBeGreaterThanOrEqual(2);
      expect(d('appswitch_traps_total', { syscall: 'socket', result: 'ok' })).toBeGreaterThanOrEqual(3);
      // every answered trap lands in exactly one latency bucket
      for (const sc of ['connect', 'bind', 'listen', 'socket']) {
        expect(d('appswitch_trap_duration_seconds_count', { syscall: sc }), sc).toBe(d('appswitch_traps_total', { syscall: sc }));
        expect(sum(after, 'appswitch_trap_duration_seconds_bucket', { syscall: sc, le: '+Inf' })).toBe(
          sum(after, 'appswitch_trap_duration_seconds_count', { syscall: sc }),
        );
      }
      expect(sum(after, 'appswitch_trap_duration_seconds_sum', { syscall: 'connect' })).toBeGreaterThan(0);
      expect(val(after, 'appswitch_daemon_open_fds')).toBeGreaterThan(0);
      expect(val(after, 'appswitch_apps')).toBeGreaterThanOrEqual(1); // the server
    } finally {
      killTree(srv);
      await out;
    }
    await waitFor(async () => val(await scrape(), 'appswitch_services{scope="local"}') === val(before, 'appswitch_services{scope="local"}'), 30_000);
  });

  it('counts and logs a policy denial and a connect to a vip without a service, one line each with the identities', async () => {
    const srv = h.run(['--ip', '10.0.0.6', '--name', 'db', '--tag', 'grp=1'], ['python3', '-u', '-m', 'http.server', '8001']);
    const out = finish(srv, 60_000);
    try {
      await h.waitService('10.0.0.6', 8001);
      const before = await scrape();
      const deniedLines = logLines('connect denied by policy').length;
      const refusedLines = logLines('connect refused: no such service').length;
      const denied = await h.runToEnd(['--ip', '10.0.0.7', '--name', 'intruder', '--tag', 'grp=2'], ['curl', '-sS', '-m', '5', 'http://10.0.0.6:8001/']);
      expect(denied.code).toBe(7); // ECONNREFUSED
      const nothing = await h.runToEnd(['--name', 'lost'], ['curl', '-sS', '-m', '5', 'http://10.9.9.9:1234/']);
      expect(nothing.code).toBe(7);
      const refused = (m: Map<string, number>): number => sum(m, 'appswitch_traps_total', { syscall: 'connect', result: 'ECONNREFUSED' });
      const after = await scrapeUntil((m) => refused(m) - refused(before) >= 2);
      expect(val(after, 'appswitch_policy_denials_total') - val(before, 'appswitch_policy_denials_total')).toBe(1);
      expect(val(after, 'appswitch_connects_refused_total') - val(before, 'appswitch_connects_refused_total')).toBe(1);

      const d = logLines('connect denied by policy').slice(deniedLines);
      expect(d).toHaveLength(1);
      expect(d[0]).toMatchObject({
        appName: 'intruder',
        client: '10.0.0.7',
        clientTags: { grp: '2' },
        service: '10.0.0.6:8001',
        serviceName: 'db',
        serviceTags: { grp: '1' },
        node: expect.any(String),
      });
      expect(d[0]?.app).toMatch(/^[0-9a-f]{8}$/);
      expect(d[0]?.serviceApp).toMatch(/^[0-9a-f]{8}$/);
      const r = logLines('connect refused: no such service').slice(refusedLines);
      expect(r).toHaveLength(1);
      expect(r[0]).toMatchObject({ appName: 'lost', service: '10.9.9.9:1234', proto: 'tcp' });
      expect(r[0]?.client).toMatch(/^10\./); // --name assigns a vip
      expect(r[0]?.app).toMatch(/^[0-9a-f]{8}$/);
    } finally {
      killTree(srv);
      await out;
    }
  });

  it('a program retrying a refused connect in a loop: every refusal counted, one log line per service (rate-limited), so one program cannot flood the log', async () => {
    const before = await scrape();
    const lines = logLines('connect refused: no such service').length;
    const loop = 'import socket\nn=0\nfor i in range(300):\n  s=socket.socket()\n  try:\n    s.connect(("10.9.9.8",4321))\n  except ConnectionRefusedError:\n    n+=1\n  s.close()\nprint(n)';
    const r = await h.runToEnd(['--name', 'hammer'], ['python3', '-c', loop]);
    expect(r.stdout.trim(), r.stderr).toBe('300');
    const after = await scrapeUntil((m) => val(m, 'appswitch_connects_refused_total') - val(before, 'appswitch_connects_refused_total') >= 300);
    expect(val(after, 'appswitch_connects_refused_total') - val(before, 'appswitch_connects_refused_total')).toBe(300);
    const mine = logLines('connect refused: no such service').slice(lines).filter((l) => l.appName === 'hammer');
    expect(mine).toHaveLength(1); /* the daemon's own decisions and the generator's share one limit */
    expect(mine[0]).toMatchObject({ service: '10.9.9.8:4321', proto: 'tcp' });
  });
});

describe('daemon log lines', () => {
  it('logs one start line with version, node, address and a config summary, and one stop line with the signal', async () => {
    const start = logLines('daemon started');
    expect(start).toHaveLength(1);
    expect(start[0]).toMatchObject({
      level: 30,
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      node: expect.any(String),
      nodeAddress: h.address,
      config: { metrics: `${h.address}:${PORT}`, vipCidrs: ['10.0.0.0/8'], fastpath: true, lb: 'p2c', logLevel: 'info' },
    });
    const d = h.daemon;
    if (!d) throw new Error('no daemon');
    const exited = new Promise<number | null>((resolve) => d.on('close', (code) => resolve(code)));
    killTree(d, 'SIGTERM');
    expect(await exited).toBe(0);
    const stop = logLines('daemon stopped');
    expect(stop).toHaveLength(1);
    expect(stop[0]).toMatchObject({ reason: 'signal', signal: 'SIGTERM', uptimeSeconds: expect.any(Number) });
    // the endpoint went away with the daemon
    const r = await h.exec(['curl', '-sS', '-m', '2', `http://${h.address}:${PORT}/metrics`]);
    expect(r.code).not.toBe(0);
  });
});
