/** Virtual identities for UDP (issue 11 item 8) and the local-host datagram connect (item 9), end to end: real
 * programs (python, a C helper, socat) under the real filter, a real daemon per network-namespace host, one host and
 * two joined hosts. A UDP server must see its clients' virtual identities in recvfrom/recvmsg/recvmmsg and reach them
 * by those; an unconnected client must see replies come from the vip:port it sent to; connected UDP and TCP keep an
 * untrapped data path. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { MemberView } from '../../src/daemon/control-protocol.js';
import { compileHelper, finish, killTree, type Result, TestBridge, TestHost, waitFor } from '../helpers/hosts.js';

let UDP: string;
let h: TestHost;
const METRICS = 9471;

beforeAll(async () => {
  UDP = compileHelper('udp-probe');
  h = TestHost.create('udpid', '192.0.2.81');
  await h.startDaemon(['--metrics-address', `${h.address}:${METRICS}`]);
});

afterAll(async () => {
  await h?.destroy();
});

/** Collects a process's stdout as it comes. */
function watch(p: ChildProcess): { text: () => string } {
  let out = '';
  p.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return { text: () => out };
}

/** A python UDP echo server on 0.0.0.0:port that prints each datagram's source as "from IP PORT" and answers
 * "ECHO <data>"; with `recvmsg`, it receives with socket.recvmsg instead of recvfrom. */
function echoServer(port: number, how: 'recvfrom' | 'recvmsg' = 'recvfrom'): string {
  const recv = how === 'recvmsg' ? 'd,_,_,a=s.recvmsg(2048)' : 'd,a=s.recvfrom(2048)';
  return [
    'import socket',
    's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)',
    `s.bind(("0.0.0.0",${port}))`,
    'print("up",flush=True)',
    'while True:',
    `  ${recv}`,
    '  print("from",a[0],a[1],flush=True)',
    '  s.sendto(b"ECHO "+d,a)',
  ].join('\n');
}

/** A python client: sends `msg` to vip:port (unconnected, or bound to `bindPort` first, or connected) and prints the
 * reply and where it came from. */
function client(vip: string, port: number, opts: { bindPort?: number; connected?: boolean } = {}): string {
  return [
    'import socket',
    'c=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)',
    'c.settimeout(10)',
    opts.bindPort ? `c.bind(("0.0.0.0",${opts.bindPort}))` : '',
    opts.connected ? `c.connect(("${vip}",${port}))\nc.send(b"hi")\nd=c.recv(2048)\na=c.getpeername()` : `c.sendto(b"hi",("${vip}",${port}))\nd,a=c.recvfrom(2048)`,
    'print("reply",d.decode(),"from",a[0],a[1],flush=True)',
  ].join('\n');
}

/** appswitch_traps_total of the recv family on host h, summed over results. */
async function recvTraps(host: TestHost): Promise<Record<string, number>> {
  const r = await host.exec(['curl', '-sS', '-m', '5', `http://${host.address}:${METRICS}/metrics`]);
  const out: Record<string, number> = { recvfrom: 0, recvmsg: 0, recvmmsg: 0 };
  for (const line of r.stdout.split('\n')) {
    const m = /^appswitch_traps_total\{syscall="(recvfrom|recvmsg|recvmmsg)",result="[^"]*"\} (\d+)/.exec(line);
    if (m) out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  }
  return out;
}

async function startServer(host: TestHost, vip: string, port: number, how: 'recvfrom' | 'recvmsg' = 'recvfrom'): Promise<{ p: ChildProcess; out: () => string; done: Promise<Result> }> {
  const p = host.run(['--ip', vip], ['python3', '-c', echoServer(port, how)]);
  const w = watch(p);
  const done = finish(p, 120_000);
  await waitFor(() => w.text().includes('up'), 15_000);
  await waitFor(async () => (await host.services()).some((s) => s.vip === vip && s.port === port && s.proto === 'udp'), 15_000);
  return { p, out: w.text, done };
}

describe('UDP identities on one host', () => {
  it('a server sees its client by vip (ephemeral port, then its bound virtual port) and the client sees the reply from vip:port', async () => {
    const srv = await startServer(h, '10.81.0.1', 5400);
    try {
      const r = await h.runToEnd(['--ip', '10.81.0.2'], ['python3', '-c', client('10.81.0.1', 5400)]);
      expect(r.stdout, r.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.1 5400$/m);
      await waitFor(() => /from 10\.81\.0\.2 \d+/.test(srv.out()), 30_000);
      expect(srv.out()).not.toContain('192.0.2.81');
      const b = await h.runToEnd(['--ip', '10.81.0.2'], ['python3', '-c', client('10.81.0.1', 5400, { bindPort: 6001 })]);
      expect(b.stdout, b.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.1 5400$/m);
      await waitFor(() => srv.out().includes('from 10.81.0.2 6001'), 30_000);
    } finally {
      killTree(srv.p, 'SIGKILL');
      await srv.done;
    }
  });

  it('recvmsg sees the vip too; a connected client still works', async () => {
    const srv = await startServer(h, '10.81.0.3', 5401, 'recvmsg');
    try {
      const r = await h.runToEnd(['--ip', '10.81.0.4'], ['python3', '-c', client('10.81.0.3', 5401)]);
      expect(r.stdout, r.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.3 5401$/m);
      await waitFor(() => /from 10\.81\.0\.4 \d+/.test(srv.out()), 30_000);
      const c = await h.runToEnd(['--ip', '10.81.0.5'], ['python3', '-c', client('10.81.0.3', 5401, { connected: true })]);
      expect(c.stdout, c.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.3 5401$/m);
      await waitFor(() => /from 10\.81\.0\.5 \d+/.test(srv.out()), 30_000);
      expect(srv.out()).not.toContain('192.0.2.81');
    } finally {
      killTree(srv.p, 'SIGKILL');
      await srv.done;
    }
  });
});

describe('UDP receives: recvmmsg, flags, blocking, signals', () => {
  it('recvmmsg fills every message with its sender\'s vip and port', async () => {
    const p = h.run(['--ip', '10.81.0.10'], [UDP, 'mmsg-server', '5410', '3']);
    const out = watch(p);
    const done = finish(p, 60_000);
    try {
      await waitFor(() => out.text().includes('up'), 15_000);
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.10' && s.port === 5410), 15_000);
      for (const [i, port] of [6011, 6012, 6013].entries()) {
        const r = await h.runToEnd(['--ip', `10.81.0.${11 + i}`], ['python3', '-c', client('10.81.0.10', 5410, { bindPort: port })]);
        expect(r.stdout, r.stderr).toMatch(/^reply hi from 10\.81\.0\.10 5410$/m);
      }
      await waitFor(() => out.text().includes('received=3'), 15_000);
      expect(out.text()).toContain('from 10.81.0.11 6011 len 2 namelen 16');
      expect(out.text()).toContain('from 10.81.0.12 6012 len 2 namelen 16');
      expect(out.text()).toContain('from 10.81.0.13 6013 len 2 namelen 16');
    } finally {
      killTree(p, 'SIGKILL');
      await done;
    }
  });

  it('MSG_PEEK leaves the datagram, MSG_TRUNC returns its full length, a short name buffer gets the full length', async () => {
    const p = h.run(['--ip', '10.81.0.20'], [UDP, 'peek', '5420']);
    const out = watch(p);
    const done = finish(p, 60_000);
    try {
      await waitFor(() => out.text().includes('up'), 15_000);
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.20' && s.port === 5420), 15_000);
      const c = await h.runToEnd(['--ip', '10.81.0.21'], ['python3', '-c', 'import socket\nc=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nc.bind(("0.0.0.0",6021))\nc.sendto(b"0123456789",("10.81.0.20",5420))']);
      expect(c.code, c.stderr).toBe(0);
      const r = await done;
      expect(r.stdout).toContain('peek 10.81.0.21 6021 10');
      expect(r.stdout).toContain('trunc 10 flags MSG_TRUNC namelen 16');
      expect(r.stdout).toContain('after empty');
    } finally {
      killTree(p, 'SIGKILL');
    }
  });

  it('non-blocking and SO_RCVTIMEO receives answer EAGAIN', async () => {
    const nb = await h.runToEnd(['--ip', '10.81.0.30'], [UDP, 'nonblock', '5430']);
    expect(nb.stdout.trim(), nb.stderr).toBe('eagain');
    const to = await h.runToEnd(['--ip', '10.81.0.30'], [UDP, 'timeout', '5431', '300']);
    expect(to.stdout.trim(), to.stderr).toBe('eagain');
  });

  it('a signal interrupts a blocked recvfrom as the kernel would: EINTR without SA_RESTART, a restart with it', async () => {
    const intr = await h.runToEnd(['--ip', '10.81.0.40'], [UDP, 'sigwait', '5440', 'intr'], 30_000);
    expect(intr.stdout, intr.stderr).toContain('eintr');
    const p = h.run(['--ip', '10.81.0.41'], [UDP, 'sigwait', '5441', 'restart']);
    const out = watch(p);
    const done = finish(p, 60_000);
    try {
      await waitFor(() => out.text().includes('alarm'), 15_000);
      expect(out.text()).not.toContain('eintr');
      const c = await h.runToEnd(['--ip', '10.81.0.42'], ['python3', '-c', 'import socket\nc=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nc.bind(("0.0.0.0",6041))\nc.sendto(b"x",("10.81.0.41",5441))']);
      expect(c.code, c.stderr).toBe(0);
      const r = await done;
      expect(r.stdout).toContain('got 10.81.0.42 6041');
    } finally {
      killTree(p, 'SIGKILL');
    }
  });

  it('a python server blocked in recvfrom stops on SIGINT (KeyboardInterrupt), as it does without appswitch', async () => {
    const p = h.run(['--ip', '10.81.0.43'], ['python3', '-c', 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(("0.0.0.0",5443))\nprint("up",flush=True)\ntry:\n  s.recvfrom(100)\nexcept KeyboardInterrupt:\n  print("interrupted",flush=True)']);
    const out = watch(p);
    const done = finish(p, 60_000);
    await waitFor(() => out.text().includes('up'), 15_000);
    await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.43' && s.port === 5443), 15_000);
    p.kill('SIGINT'); /* the launcher passes it on to the program */
    const r = await done;
    expect(r.stdout).toContain('interrupted');
  });
});

describe('who is shown, and who is not', () => {
  it('datagrams from a sender nobody vouches for (a host process at the real endpoint) are dropped; an app still gets through', async () => {
    const srv = await startServer(h, '10.81.0.50', 5450);
    try {
      const ep = (await h.services()).find((s) => s.vip === '10.81.0.50' && s.port === 5450)?.endpoint as string;
      const [ip, port] = [ep.slice(0, ep.lastIndexOf(':')), ep.slice(ep.lastIndexOf(':') + 1)];
      const before = ((await request<{ unidentified?: number; udpUnidentified?: number }>(h.socket, 'status')) as { udpUnidentified?: number }).udpUnidentified ?? 0;
      const raw = await h.exec([UDP, 'send', ip, port, '3']); /* outside appswitch, straight at the real endpoint */
      expect(raw.stdout.trim()).toBe('sent 3');
      const r = await h.runToEnd(['--ip', '10.81.0.51'], ['python3', '-c', client('10.81.0.50', 5450)]);
      expect(r.stdout, r.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.50 5450$/m);
      await waitFor(() => /from 10\.81\.0\.51 \d+/.test(srv.out()), 30_000);
      expect(srv.out()).not.toContain('192.0.2.81');
      expect(srv.out().match(/^from /gm)?.length).toBe(1);
      const after = ((await request<{ udpUnidentified?: number }>(h.socket, 'status')) as { udpUnidentified?: number }).udpUnidentified ?? 0;
      expect(after).toBeGreaterThan(before);
    } finally {
      killTree(srv.p, 'SIGKILL');
      await srv.done;
    }
  });

  it('replies from an address the client sent to directly (egress) show that real address', async () => {
    const echo = h.spawn(['python3', '-c', 'import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nu.bind(("192.0.2.81",9981))\nprint("up",flush=True)\nwhile True:\n  d,a=u.recvfrom(100); u.sendto(d,a)']);
    const out = watch(echo);
    try {
      await waitFor(() => out.text().includes('up'), 30_000);
      const r = await h.runToEnd([], ['python3', '-c', client('192.0.2.81', 9981)]);
      expect(r.stdout, r.stderr).toMatch(/^reply hi from 192\.0\.2\.81 9981$/m);
    } finally {
      killTree(echo, 'SIGKILL');
    }
  });
});

describe('the data path of connected UDP and TCP stays untrapped', () => {
  it('recv() on a connected UDP socket and on TCP costs no trap; recvfrom on an unconnected one does (the counter sees them)', async () => {
    const srv = await startServer(h, '10.81.0.60', 5460);
    const tcp = h.run(['--ip', '10.81.0.61'], ['python3', '-c', 'import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(("0.0.0.0",5461))\ns.listen()\nprint("up",flush=True)\nc,_=s.accept()\nwhile True:\n  d=c.recv(100)\n  if not d: break\n  c.sendall(d)']);
    const tout = watch(tcp);
    const tdone = finish(tcp, 60_000);
    try {
      await waitFor(() => tout.text().includes('up'), 15_000);
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.61' && s.port === 5461), 15_000);
      const t0 = await recvTraps(h);
      const c = await h.runToEnd(['--ip', '10.81.0.62'], [UDP, 'connected-recv', '10.81.0.60', '5460', '200']);
      expect(c.stdout.trim(), c.stderr).toBe('ok 200');
      const t = await h.runToEnd(['--ip', '10.81.0.62'], [UDP, 'tcp-recv', '10.81.0.61', '5461', '200']);
      expect(t.stdout.trim(), t.stderr).toBe('ok 200');
      await new Promise((r) => setTimeout(r, 1500)); /* the generators flush their counters when they end */
      const t1 = await recvTraps(h);
      /* the server's own recvfrom calls are trapped: 200 of them (and no more for 200 client receives) */
      expect(t1.recvfrom - t0.recvfrom).toBeGreaterThanOrEqual(200);
      expect(t1.recvfrom - t0.recvfrom).toBeLessThan(300);
      expect(t1.recvmsg - t0.recvmsg).toBe(0);
      const u = await h.runToEnd(['--ip', '10.81.0.63'], [UDP, 'rtt', '10.81.0.60', '5460', '50']);
      expect(u.stdout, u.stderr).toMatch(/^rtt \d+ \d+$/m);
      await waitFor(async () => (await recvTraps(h)).recvfrom - t1.recvfrom >= 100, 30_000); /* 50 by the client, 50 by the server */
    } finally {
      killTree(srv.p, 'SIGKILL');
      killTree(tcp, 'SIGKILL');
      await srv.done;
      await tdone;
    }
  });
});

describe('a datagram connect to the local host (issue 11 item 9)', () => {
  it('python3 -m http.server starts without a logged or counted refusal; UDP connects to [::]:P and 127.0.0.1:P succeed', async () => {
    const refusedBefore = (await request<{ refused: number }>(h.socket, 'status')).refused;
    const logBefore = h.daemonLog.length;
    const p = h.run(['--ip', '10.81.0.70'], ['python3', '-m', 'http.server', '8170']);
    const done = finish(p, 60_000);
    try {
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.70' && s.port === 8170 && s.proto === 'tcp'), 15_000);
      /* its getaddrinfo ran before its bind: what it caused is logged by now */
      expect(h.daemonLog.slice(logBefore)).not.toMatch(/connect refused/);
      expect((await request<{ refused: number }>(h.socket, 'status')).refused).toBe(refusedBefore);
      const c = await h.runToEnd(['--ip', '10.81.0.71'], [
        'python3',
        '-c',
        'import socket\nfor fam,a in ((socket.AF_INET6,"::"),(socket.AF_INET,"0.0.0.0"),(socket.AF_INET,"127.0.0.1")):\n  s=socket.socket(fam,socket.SOCK_DGRAM)\n  s.connect((a,8171))\n  print("connected",a,flush=True)',
      ]);
      expect(c.stdout, c.stderr).toContain('connected ::');
      expect(c.stdout).toContain('connected 0.0.0.0');
      expect(c.stdout).toContain('connected 127.0.0.1');
      const log = h.daemonLog.slice(logBefore);
      expect(log).not.toMatch(/connect refused/);
      expect((await request<{ refused: number }>(h.socket, 'status')).refused).toBe(refusedBefore);
    } finally {
      killTree(p, 'SIGKILL');
      await done;
    }
  });
});

describe('UDP identities across hosts', () => {
  let br: TestBridge;
  let a: TestHost;
  let b: TestHost;

  beforeAll(async () => {
    br = new TestBridge('udpx');
    [a, b] = br.hostsOf('udpx', 2) as [TestHost, TestHost];
    await a.startDaemon(['--node-name', 'ua']);
    await b.startDaemon(['--node-name', 'ub', '--join', a.address]);
    for (const x of [a, b]) {
      await waitFor(async () => (await request<MemberView[]>(x.socket, 'members')).filter((m) => m.state === 'alive').length === 2, 20_000);
    }
  });

  afterAll(async () => {
    await br?.destroy();
  });

  it('a server sees a client of another host by vip (ephemeral and bound ports); the client sees the reply from vip:port', async () => {
    const srv = await startServer(a, '10.82.0.1', 5500);
    try {
      await waitFor(async () => (await b.services()).some((s) => s.vip === '10.82.0.1' && s.port === 5500 && s.proto === 'udp'), 20_000);
      const r = await b.runToEnd(['--ip', '10.82.0.2'], ['python3', '-c', client('10.82.0.1', 5500)]);
      expect(r.stdout, r.stderr).toMatch(/^reply ECHO hi from 10\.82\.0\.1 5500$/m);
      await waitFor(() => /from 10\.82\.0\.2 \d+/.test(srv.out()), 30_000);
      const s = await b.runToEnd(['--ip', '10.82.0.2'], ['python3', '-c', client('10.82.0.1', 5500, { bindPort: 6101 })]);
      expect(s.stdout, s.stderr).toMatch(/^reply ECHO hi from 10\.82\.0\.1 5500$/m);
      await waitFor(() => srv.out().includes('from 10.82.0.2 6101'), 30_000);
      expect(srv.out()).not.toMatch(/192\.0\.2\./);
    } finally {
      killTree(srv.p, 'SIGKILL');
      await srv.done;
    }
  });
});

describe('a daemon restart under a UDP conversation', () => {
  let r: TestHost;

  beforeAll(async () => {
    r = TestHost.create('udprs', '192.0.2.82');
    await r.startDaemon();
  });

  afterAll(async () => {
    await r?.destroy();
  });

  it('the server keeps seeing its client (an unbound socket, reported once) by vip after the daemon restarted', async () => {
    const srv = await startServer(r, '10.83.0.1', 5600);
    const loop = [
      'import socket,time',
      'c=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)',
      'c.settimeout(0.5)',
      'while True:',
      '  c.sendto(b"n",("10.83.0.1",5600))',
      '  try: c.recvfrom(100)',
      '  except OSError: pass',
      '  time.sleep(0.1)',
    ].join('\n');
    const cli = r.run(['--ip', '10.83.0.2'], ['python3', '-c', loop]);
    const cliDone = finish(cli, 120_000);
    const froms = (): string[] => srv.out().split('\n').filter((l) => l.startsWith('from '));
    try {
      await waitFor(() => froms().length >= 3, 15_000);
      const d = r.daemon;
      if (d && d.exitCode === null) await new Promise<void>((res) => (d.once('exit', () => res()), d.kill('SIGKILL')));
      await r.startDaemon();
      const at = froms().length;
      const t = Date.now();
      /* past the server's 2 s identity cache, so the new daemon is asked about the client */
      await waitFor(() => froms().length >= at + 10 && Date.now() - t > 4000, 30_000).catch((e: unknown) => {
        console.log(`server:\n${srv.out()}\ndaemon:\n${r.daemonLog.slice(-3000)}`);
        throw e;
      });
      for (const l of froms()) expect(l).toMatch(/^from 10\.83\.0\.2 \d+$/);
    } finally {
      killTree(cli, 'SIGKILL');
      killTree(srv.p, 'SIGKILL');
      await cliDone;
      await srv.done;
    }
  });
});

/** A DNS query for `name` (type A, id 0x1234), as bytes for a python literal. */
const DNS_QUERY = (name: string): string =>
  `b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"+b"".join(bytes([len(p)])+p.encode() for p in "${name}".split("."))+b"\\x00\\x00\\x01\\x00\\x01"`;

describe('stock UDP servers', () => {
  it('socat UDP-RECVFROM tells its child the client\'s vip and port; the client gets the answer from vip:port', async () => {
    const p = h.run(['--ip', '10.81.0.90'], ['socat', 'UDP-RECVFROM:5490,fork', 'SYSTEM:echo peer $SOCAT_PEERADDR $SOCAT_PEERPORT']);
    const done = finish(p, 60_000);
    try {
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.90' && s.port === 5490), 15_000);
      const r = await h.runToEnd(['--ip', '10.81.0.91'], ['python3', '-c', client('10.81.0.90', 5490, { bindPort: 6091 })]);
      expect(r.stdout, r.stderr).toMatch(/^reply peer 10\.81\.0\.91 6091\n? from 10\.81\.0\.90 5490$/m);
    } finally {
      killTree(p, 'SIGKILL');
      await done;
    }
  });

  it('dnsmasq logs its client by vip and answers it from vip:port', async () => {
    const p = h.run(['--ip', '10.81.0.92'], [
      'dnsmasq', '--no-daemon', '--user=root', '--port=5492', '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', '--address=/probe.example/192.0.2.200',
      '--log-queries', '--log-facility=-', '--pid-file=',
    ]);
    const out = watch(p);
    const done = finish(p, 60_000);
    try {
      await waitFor(async () => (await h.services()).some((s) => s.vip === '10.81.0.92' && s.port === 5492 && s.proto === 'udp'), 15_000).catch((e: unknown) => {
        console.log(`dnsmasq:\n${out.text()}`);
        throw e;
      });
      const q = [
        'import socket',
        'c=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)',
        'c.settimeout(10)',
        'c.bind(("0.0.0.0",6093))',
        `c.sendto(${DNS_QUERY('probe.example')},("10.81.0.92",5492))`,
        'd,a=c.recvfrom(512)',
        'print("answer",d[-4:]==bytes([192,0,2,200]),"from",a[0],a[1],flush=True)',
      ].join('\n');
      const r = await h.runToEnd(['--ip', '10.81.0.93'], ['python3', '-c', q]);
      expect(r.stdout, r.stderr).toMatch(/^answer True from 10\.81\.0\.92 5492$/m);
      await waitFor(() => /query\[A\] probe\.example from 10\.81\.0\.93/.test(out.text()), 30_000);
      expect(out.text()).not.toMatch(/from 192\.0\.2\./);
    } finally {
      killTree(p, 'SIGKILL');
      await done;
    }
  });
});
