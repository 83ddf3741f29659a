/** Virtual identities for UDP (issue 11 item 8) and the local-host datagram connect (item 9), end to end: real
 * programs (python, a C helper, socat) under the real filter, a real daemon per network-namespace host, one host and
 * two joined hosts. A UDP server must see its clients' virtual identities in recvfrom/recvmsg/recvmmsg and reach them
 * by those; an unconnected client must see replies come from the vip:port it sent to; connected UDP and TCP keep an
 * untrapped data path. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
      await waitFor(() => /from 10\.81\.0\.2 \d+/.test(srv.out()), 10_000);
      expect(srv.out()).not.toContain('192.0.2.81');
      const b = await h.runToEnd(['--ip', '10.81.0.2'], ['python3', '-c', client('10.81.0.1', 5400, { bindPort: 6001 })]);
      expect(b.stdout, b.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.1 5400$/m);
      await waitFor(() => srv.out().includes('from 10.81.0.2 6001'), 10_000);
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
      await waitFor(() => /from 10\.81\.0\.4 \d+/.test(srv.out()), 10_000);
      const c = await h.runToEnd(['--ip', '10.81.0.5'], ['python3', '-c', client('10.81.0.3', 5401, { connected: true })]);
      expect(c.stdout, c.stderr).toMatch(/^reply ECHO hi from 10\.81\.0\.3 5401$/m);
      await waitFor(() => /from 10\.81\.0\.5 \d+/.test(srv.out()), 10_000);
      expect(srv.out()).not.toContain('192.0.2.81');
    } finally {
      killTree(srv.p, 'SIGKILL');
      await srv.done;
    }
  });
});
