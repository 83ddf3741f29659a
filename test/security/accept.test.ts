/** Issue 10, item 5(d): unidentified connections must never delay another's accept. A single-threaded server
 * under appswitch accepts one connection at a time; its generator asks the daemon who each peer is. A plain host
 * process (not trapped, so no report can ever come for its sockets) queues many direct connections to the server's
 * real endpoint ahead of a legitimate client and keeps adding more. Before: the daemon waited identityWaitMs
 * (500 ms) for each, on this node or (peer API) on the client's node, so the legitimate client waited >= 20 x 500 ms
 * behind the first 20. Now the daemon asks the kernel (sock_diag) which cgroup created the client socket: not a
 * generator's -> refused at once. The deadline below is a third of what the old behaviour needed for the queued
 * connections alone: an ordering/starvation check, not a speed measurement. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, killTree, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const QUEUED = 20; /* attacker connections queued ahead of the legitimate client */
const REQUESTS = 10;
const OLD_WAIT_MS = 500;
const DEADLINE_MS = Math.floor((QUEUED * OLD_WAIT_MS) / 3);

let br: TestBridge;
let h1: TestHost;
let h2: TestHost;

/** Opens `n` connections to ip:port and holds them, then one more every 50 ms until told to stop (stdin closes or
 * SIGTERM); prints {"opened","closed"} when done. `closed`: the far side closed it (the server's generator refused). */
const ATTACKER = `
const net = require('net');
const [ip, port, n] = process.argv.slice(1);
let opened = 0, closed = 0, failed = 0;
const open = () => { const s = net.connect(Number(port), ip); s.on('connect', () => { opened++; if (opened === Number(n)) console.log('queued'); });
  s.on('end', () => { closed++; s.destroy(); }); s.on('close', (err) => { if (err) failed++; }); s.on('error', () => {}); };
for (let i = 0; i < Number(n); i++) open();
const t = setInterval(open, 50);
const done = () => { clearInterval(t); console.log(JSON.stringify({ opened, closed, failed })); process.exit(0); };
process.on('SIGTERM', done);
`;

const SERVER = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7000)); s.listen(512)
print("listening", flush=True)
while True:
    c, a = s.accept()
    print("peer", a[0], flush=True)
    d = c.recv(100)
    c.sendall(d)
    c.close()
`;

const CLIENT = `
import socket, time
t = time.time(); ok = 0
for i in range(${REQUESTS}):
    c = socket.create_connection(("10.0.0.5", 7000), timeout=60); c.sendall(b"hi"); ok += c.recv(10) == b"hi"; c.close()
print(ok, int((time.time() - t) * 1000), flush=True)
`;

beforeAll(async () => {
  br = new TestBridge('acc');
  [h1, h2] = br.hostsOf('acc', 2) as [TestHost, TestHost];
  await h1.startDaemon(['--node-name', 'a1']);
  await h2.startDaemon(['--node-name', 'a2', '--join', '192.0.2.1']);
  await waitFor(async () => {
    const r = await h2.cli(['get', 'members', '--json']);
    return (JSON.parse(r.stdout) as Array<{ state: string }>).filter((m) => m.state === 'alive').length === 2 || undefined;
  }, 15_000);
});

afterAll(async () => {
  await br?.destroy();
});

async function unidentified(h: TestHost): Promise<number> {
  const r = await h.cli(['status', '--json']);
  return (JSON.parse(r.stdout) as { unidentified: number }).unidentified;
}

/** The scenario: server on h1; attacker (plain process) and legitimate client (under appswitch) on `from`. */
async function scenario(from: TestHost): Promise<void> {
  const srv = h1.run(['--ip', '10.0.0.5'], ['python3', '-u', '-c', SERVER]);
  let peers = '';
  srv.stdout?.on('data', (b: Buffer) => (peers += b.toString()));
  try {
    await h1.waitService('10.0.0.5', 7000);
    await waitFor(async () => (await from.services()).some((s) => s.vip === '10.0.0.5') || undefined, 15_000);
    const endpoint = (await h1.services()).find((s) => s.vip === '10.0.0.5' && s.port === 7000)?.endpoint as string;
    const [ip, port] = endpoint.split(':') as [string, string];
    const before = await unidentified(h1);
    const atk = from.spawn(['node', '-e', ATTACKER, ip, port, String(QUEUED)]);
    let atkOut = '';
    atk.stdout?.on('data', (b: Buffer) => (atkOut += b.toString()));
    await waitFor(() => atkOut.includes('queued') || undefined);
    const c = await finish(from.run([], ['python3', '-u', '-c', CLIENT]), 120_000);
    killTree(atk, 'SIGTERM');
    await finish(atk, 10_000);
    const [ok, ms] = c.stdout.trim().split(' ').map(Number) as [number, number];
    expect(ok, c.stderr).toBe(REQUESTS);
    expect(ms).toBeLessThan(DEADLINE_MS); /* the old behaviour needed >= QUEUED x 500 ms before the first one */
    const a = JSON.parse(atkOut.split('\n').find((l) => l.startsWith('{')) as string) as { opened: number; closed: number };
    expect(a.opened).toBeGreaterThanOrEqual(QUEUED);
    // every attacker connection the server's generator took was refused, none reached the program
    await waitFor(async () => (await unidentified(h1)) - before >= QUEUED || undefined, 15_000);
    const accepted = peers.split('\n').filter((l) => l.startsWith('peer '));
    expect(accepted.length).toBe(REQUESTS);
    expect(accepted.every((l) => l.startsWith('peer 169.254.'))).toBe(true); /* the client's identity, never the attacker */
  } finally {
    killTree(srv, 'SIGKILL');
    await finish(srv, 10_000);
  }
}

describe('unidentified connections at accept', () => {
  it('a plain process on the same node: its connections are refused at once, the legitimate client is not held up', async () => {
    await scenario(h1);
  });

  it('a plain process on another node: that node\'s daemon tells it apart (peer API with the server endpoint)', async () => {
    await scenario(h2);
  });
});
