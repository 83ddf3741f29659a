// The real transport: three members over UDP + TCP on 127.0.0.1 with ephemeral ports (real clock, 'local' profile).

import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Memberlist, UdpTransport } from '../../src/gossip/index.js';

const running: Memberlist[] = [];
const transports: UdpTransport[] = [];

afterEach(() => {
  for (const m of running.splice(0)) m.shutdown();
  for (const t of transports.splice(0)) t.close();
});

async function waitFor(pred: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pred();
}

describe('UdpTransport', () => {
  it('3 members on 127.0.0.1: join, a key propagates, one leaves', async () => {
    const key = randomBytes(32);
    const nodes: Memberlist[] = [];
    for (let i = 0; i < 3; i++) {
      const t = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0 });
      transports.push(t);
      expect(t.localAddress).toBe(`127.0.0.1:${t.port}`);
      const m = new Memberlist({ name: `udp-${i}`, transport: t, profile: 'local', keyring: [key] });
      running.push(m);
      nodes.push(m);
    }
    const [a, b, c] = nodes as [Memberlist, Memberlist, Memberlist];
    expect(await b.join([a.address])).toBe(1);
    expect(await c.join([a.address])).toBe(1);
    expect(await waitFor(() => nodes.every((n) => n.numAlive() === 3), 5_000)).toBe(true);

    b.setLocal('svc', 'hello');
    expect(
      await waitFor(() => [a, c].every((n) => new TextDecoder().decode(n.view().get('udp-1')?.get('svc') ?? new Uint8Array()) === 'hello'), 5_000),
    ).toBe(true);

    await c.leave(2_000);
    c.shutdown();
    expect(await waitFor(() => a.member('udp-2')?.state === 'left' && b.member('udp-2')?.state === 'left', 5_000)).toBe(true);
    for (const n of [a, b]) {
      const st = n.stats();
      expect(st.packets.received).toBeGreaterThan(0);
      expect(st.streams.received + st.streams.sent).toBeGreaterThan(0);
      expect(Object.values(st.dropped).reduce((x, y) => x + y, 0)).toBe(0);
    }
  }, 20_000);

  it('stream requests fail cleanly: refused port, oversized frame, closed transport', async () => {
    const t = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0, maxStreamBytes: 1024 });
    transports.push(t);
    const other = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0, maxStreamBytes: 1024 });
    transports.push(other);
    other.onStream((_from, req, reply) => reply(req));
    const call = (addr: string, buf: Uint8Array): Promise<string> =>
      new Promise((resolve) => t.request(addr, buf, 2_000, (err, resp) => resolve(err ? err.code : `ok:${resp!.length}`)));
    expect(await call(other.localAddress, new Uint8Array(100))).toBe('ok:100');
    expect(await call(other.localAddress, new Uint8Array(5000))).toBe('ERR_GOSSIP_FRAME_TOO_LARGE');
    const closedPort = other.port;
    other.close();
    expect(await call(`127.0.0.1:${closedPort}`, new Uint8Array(10))).toBe('ERR_GOSSIP_UNREACHABLE');
    t.close();
    expect(await call(`127.0.0.1:${closedPort}`, new Uint8Array(10))).toBe('ERR_GOSSIP_TRANSPORT_CLOSED');
  });

  it('refuses a non-IP bind address with a stable code', async () => {
    await expect(UdpTransport.create({ bindAddress: 'localhost', port: 0 })).rejects.toMatchObject({ code: 'ERR_GOSSIP_BAD_ADDRESS' });
  });
});
