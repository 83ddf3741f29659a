/** Ingress to an instance on the gateway itself (docs/ingress-local.md): a gateway host g1 runs a trapped server
 * exposed with `run --expose 8080:80`; the outside host curls g1:8080. The kernel (BPF sk_lookup) hands the
 * connection to the program's own listening socket: the program answers, sees the outside client's real address and
 * port, and the gateway's relay counts nothing. Attacks: a port steered to the same listener by hand (not an exposure)
 * is refused at accept as an unidentified peer, and so is a trapped program of the gateway that connects to the host
 * port at a second address of the gateway (steering takes every local address; the doors close only the gateway
 * address; here a second address added while the daemon runs): neither reaches the program. The steered accepts are
 * answered by the program's generator from the decision table (no AS_ACCEPT to the daemon: steering.decidedByGenerator);
 * the refused ones are never the generator's. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from '../../src/cli/client.js';
import type { AppView, ServiceView, StatusResult } from '../../src/daemon/control-protocol.js';
import { findSocket } from '../../src/gateway/listener-fds.js';
import { native } from '../../src/native/binding.js';
import { ROOT, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';
import { connectionsOf, holdConnection } from '../helpers/outside-held.js';

const SERVER = `${ROOT}/test/helpers/whoami-server.py`;
const PEER_HTTP = `${ROOT}/test/helpers/peer-http.py`;
const VIP = '10.0.0.90';
const VIP_HELD = '10.0.0.91';

let br: TestBridge;
let g1: TestHost;
let out: TestHost;

/** The relay's counters in status (gateway/ingress.ts), and steering's. */
type Status = StatusResult & { ingress?: { gateway: boolean; accepted: number; forwarded: number } };
const status = (h: TestHost): Promise<Status> => request<Status>(h.socket, 'status');

/** curl (HTTP/0.9: whoami-server.py answers one line and closes) from the outside host; the last line is curl's local
 * port. */
async function curl(to: string, port: number): Promise<{ code: number | null; body: string; localPort: number }> {
  const r = await out.exec(['curl', '-sS', '--http0.9', '-m', '10', '-w', '\n%{local_port}', `http://${to}:${port}/`], 15_000);
  const lines = r.stdout.trim().split('\n');
  return { code: r.code, body: lines.length > 1 ? lines.slice(0, -1).join('\n') : '', localPort: Number(lines[lines.length - 1]) };
}

beforeAll(async () => {
  br = new TestBridge('il');
  [g1] = br.hostsOf('il', 1) as [TestHost];
  out = br.outside();
  await out.exec(['ip', 'addr', 'add', '192.0.2.200/24', 'dev', 'v0']);
  await g1.startDaemon(['--node-name', 'g1', '--gateway']);
  g1.run(['--ip', VIP, '--name', 'web', '--expose', '8080:80'], ['python3', SERVER, '80', 'g1']);
  await g1.waitService(VIP, 80, 30_000);
  /* a server that keeps a connection open while its client does, for `get connections` */
  g1.run(['--ip', VIP_HELD, '--name', 'held', '--expose', '8082:80'], ['python3', PEER_HTTP, 'held', '80']);
  await g1.waitService(VIP_HELD, 80, 30_000);
  await waitFor(async () => {
    const ports = Object.keys((await status(g1)).steering?.ports ?? {});
    return ports.includes('8080') && ports.includes('8082');
  }, 15_000, 100);
}, 60_000);

afterAll(async () => {
  await br?.destroy();
});

describe('ingress to an instance on the gateway (sk_lookup)', () => {
  it('the outside client reaches the program directly: answered, its real address seen, the relay counts nothing', async () => {
    const before = await status(g1);
    expect(before.steering).toMatchObject({ available: true, ports: { '8080': `${VIP}:80` } });
    for (let i = 0; i < 5; i++) {
      const c = await curl('192.0.2.1', 8080);
      expect(c.code, c.body).toBe(0);
      /* whoami-server.py: "TAG local=… peer=IP:PORT": the program's accept() gave the outside client's own endpoint */
      const m = /^g1 local=\S+ peer=([\d.]+):(\d+)$/.exec(c.body.trim());
      expect(m, c.body).not.toBeNull();
      expect(m![1]).toBe('192.0.2.200');
      expect(Number(m![2])).toBe(c.localPort);
    }
    /* answered by the program's generator from the decision table (native/gen_ingress.c): no AS_ACCEPT went to the
     * daemon; it hears of them in the generator's AS_CLAIMED batch (sent within a few ms), which it counts */
    await waitFor(async () => (await status(g1)).steering!.decidedByGenerator - before.steering!.decidedByGenerator >= 5, 10_000, 50);
    const after = await status(g1);
    expect(after.steering!.accepted - before.steering!.accepted).toBe(5);
    expect(after.steering!.decidedByGenerator - before.steering!.decidedByGenerator).toBe(5);
    expect(after.unidentified).toBe(before.unidentified);
    expect(after.ingress?.gateway).toBe(true);
    /* never passed a proxy: the relay neither accepted nor forwarded anything */
    expect(after.ingress?.accepted ?? 0).toBe(0);
    expect(after.ingress?.forwarded ?? 0).toBe(0);
    /* `get connections` on the gateway shows an open one as the outside client's (from the generator's AS_CLAIMED
     * batch: src/trap/outside-connections.ts) until it is closed; then the sweep drops it */
    const held = await holdConnection(out, '192.0.2.1', 8082);
    try {
      expect(held.endpoint).toMatch(/^192\.0\.2\.200:\d+$/);
      await waitFor(async () => (await connectionsOf(g1, held.endpoint)).length > 0, 5_000, 50);
      expect(await connectionsOf(g1, held.endpoint)).toMatchObject([{ direction: 'in', path: 'tcp', client: '192.0.2.200', clientApp: 'external', accepted: true, serverName: 'held' }]);
      held.close();
      await waitFor(async () => (await connectionsOf(g1, held.endpoint)).length === 0, 15_000, 100);
    } finally {
      held.proc.kill('SIGKILL');
    }
  });

  it('attack: another port steered to the program\'s listener by hand (not an exposure) is refused at accept', async () => {
    const apps = await request<AppView[]>(g1.socket, 'apps');
    const app = apps.find((a) => a.identity === VIP)!;
    const svc = (await request<ServiceView[]>(g1.socket, 'services')).find((s) => s.vip === VIP && s.port === 80)!;
    const realPort = Number(svc.endpoint.split(':')[1]);
    const ss = execFileSync('ip', ['netns', 'exec', g1.ns, 'ss', '-Hltne', `sport = :${realPort}`], { encoding: 'utf8' });
    const inode = /ino:(\d+)/.exec(ss)![1]!;
    const at = findSocket(app.pid!, inode)!;
    expect(at).toBeDefined();
    const h = native.skLookupOpen(`/run/netns/${g1.ns}`);
    try {
      const fd = native.pidGetFd(at.pid, at.fd);
      native.skLookupSet(h, 9999, fd);
      native.close(fd);
      const before = await status(g1);
      const c = await curl('192.0.2.1', 9999);
      expect(c.code).not.toBe(0); /* the generator dropped it: no answer */
      expect(c.body).not.toMatch(/^g1 /);
      const after = await status(g1);
      expect(after.unidentified).toBeGreaterThan(before.unidentified);
      expect(after.steering!.accepted).toBe(before.steering!.accepted);
      expect(after.steering!.decidedByGenerator).toBe(before.steering!.decidedByGenerator);
    } finally {
      native.skLookupClose(h);
    }
    /* the exposure itself still works (and is counted: its claim reaches the daemon in the generator's next batch) */
    const before = (await status(g1)).steering!.accepted;
    expect((await curl('192.0.2.1', 8080)).code).toBe(0);
    await waitFor(async () => (await status(g1)).steering!.accepted === before + 1, 10_000, 50);
  });

  it('attack: a trapped program of the gateway cannot pass for an outside client through a steered port', async () => {
    g1.addAddress('198.51.100.2/24'); /* a second address, added while the daemon runs: no door closes it */
    const before = await status(g1);
    const r = await g1.runToEnd([], ['curl', '-sS', '--http0.9', '-m', '5', 'http://198.51.100.2:8080/']);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toMatch(/^g1 /);
    const after = await status(g1);
    expect(after.steering!.refused).toBeGreaterThan(before.steering!.refused);
    expect(after.steering!.accepted).toBe(before.steering!.accepted);
    /* a peer of this host is never answered by the generator (not even at an address the table does not list yet) */
    expect(after.steering!.decidedByGenerator).toBe(before.steering!.decidedByGenerator);
    /* the same from a process of the host that is not under appswitch: an outside client, as through the relay */
    const plain = await g1.exec(['curl', '-sS', '--http0.9', '-m', '5', 'http://198.51.100.2:8080/']);
    expect(plain.stdout).toMatch(/^g1 local=\S+ peer=198\.51\.100\.2:\d+/);
  });

  it('attack: nor can one that was running before the address came (the table does not list it yet: the generator asks the kernel)', async () => {
    const go = path.join(mkdtempSync(path.join(tmpdir(), 'appswitch-il-')), 'go');
    const client = g1.run([], ['sh', '-c', `while [ ! -e ${go} ]; do sleep 0.02; done; exec curl -sS --http0.9 -m 5 http://203.0.113.3:8080/`]);
    let stdout = '';
    client.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    const ended = new Promise<number | null>((r) => client.on('exit', (code) => r(code)));
    /* registered: its start published the table */
    await waitFor(async () => (await request<AppView[]>(g1.socket, 'apps')).some((a) => a.cmd.join(' ').includes(go)), 15_000, 50);
    const before = await status(g1);
    g1.addAddress('203.0.113.3/24'); /* now: no publication lists it until the next event or the 5 s safety publish */
    writeFileSync(go, '');
    expect(await ended).not.toBe(0);
    expect(stdout).not.toMatch(/^g1 /);
    const after = await status(g1);
    expect(after.steering!.refused).toBeGreaterThan(before.steering!.refused);
    expect(after.steering!.accepted).toBe(before.steering!.accepted);
    expect(after.steering!.decidedByGenerator).toBe(before.steering!.decidedByGenerator);
  });

  it('when the program ends, the host port is no longer steered', async () => {
    const apps = await request<AppView[]>(g1.socket, 'apps');
    const app = apps.find((a) => a.identity === VIP)!;
    process.kill(app.pid!, 'SIGKILL');
    await waitFor(async () => !Object.keys((await status(g1)).steering?.ports ?? {}).includes('8080'), 15_000, 100);
    expect(Object.keys((await status(g1)).steering?.ports ?? {})).toEqual(['8082']); /* the other app's stays */
  });
});
