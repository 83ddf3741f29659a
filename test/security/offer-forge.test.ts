/** Issue 12: same-host fast-path connections go from the client's generator straight to the server's, over the
 * server generator's offer socket (native/offer_chan.h): an abstract Unix datagram socket in the host's network
 * namespace, whose name any local user can read in /proc/net/unix. The attack: a local user that is not root (and
 * not under appswitch) sends the server's generator a forged offer — "the connection from node:P is app 10.9.9.9,
 * here is its socket" — then connects from port P to the server's real endpoint. Were the offer taken, the server
 * would accept the attacker's socket pair end as a client with a forged identity. The generator takes offers only
 * from its own uid (SCM_CREDENTIALS): the forged one is dropped, and the direct connection is refused at accept as
 * any unidentified one. A trapped program cannot even try: its abstract names are its own empty namespace's. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finish, type Result, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;

const SERVER = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7000)); s.listen(64)
print("listening", flush=True)
while True:
    c, a = s.accept()
    c.settimeout(2)
    try:
        d = c.recv(100)
    except OSError:
        d = b""
    print("peer", a[0], d.decode(errors="replace"), flush=True)
    c.close()
`;

/* argv: the offer socket's name, the node address, the server's real port */
const ATTACKER = `
import array, os, socket, struct, sys
name, node, rport = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = socket.socket(); c.bind(("0.0.0.0", 0)); lport = c.getsockname()[1]
a, b = socket.socketpair()
ep = lambda ip, port: socket.inet_pton(socket.AF_INET6, "::ffff:" + ip) + struct.pack("<H", port)
msg = struct.pack("<II", 0x4F464652, 0) + ep(node, lport) + ep("10.9.9.9", lport) + b"forged".ljust(32, b"\\0")
assert len(msg) == 76
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
u.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [b.fileno()]))], 0, "\\0" + name)
a.sendall(b"forged-pair")
print("offer sent", os.getuid(), flush=True)
c.settimeout(5)
c.connect((node, rport))
c.sendall(b"direct")
try:
    r = c.recv(10)
    print("direct", "closed" if r == b"" else "open", flush=True)
except OSError as e:
    print("direct", type(e).__name__, flush=True)
`;

beforeAll(async () => {
  h = TestHost.create('forge', '192.0.2.91');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

describe('forged fast-path offers', () => {
  it('a local user who is not root cannot hand a server a connection under a forged identity', async () => {
    const srv = h.run(['--ip', '10.0.0.91'], ['python3', '-c', SERVER]);
    let out = '';
    srv.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    const done = finish(srv, 60_000);
    await h.waitService('10.0.0.91', 7000, 20_000);
    const svc = (await h.services()).find((s) => s.vip === '10.0.0.91');
    const rport = Number(svc?.endpoint.split(':').pop());
    /* the server's generator's offer socket, as every local user sees it */
    const unix = (await h.exec(['cat', '/proc/net/unix'])).stdout;
    const names = [...unix.matchAll(/@(appswitch-gen-[0-9a-f]{32})/g)].map((m) => m[1] as string);
    expect(names.length).toBeGreaterThan(0);
    const results: Result[] = [];
    for (const name of new Set(names)) {
      results.push(await h.exec(['setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', '/usr/bin/python3', '-c', ATTACKER, name, h.address, String(rport)], 20_000));
    }
    for (const r of results) {
      expect(r.stdout, r.stderr).toMatch(/offer sent 65534/);
      expect(r.stdout).toMatch(/direct (closed|ConnectionResetError|TimeoutError)/); /* refused at accept */
    }
    /* a legitimate client still gets through, by vip */
    const ok = await h.runToEnd([], ['python3', '-c', 'import socket; c = socket.create_connection(("10.0.0.91", 7000), timeout=10); c.sendall(b"legit"); c.recv(1); print("ok")']);
    expect(ok.code, ok.stderr).toBe(0);
    await waitFor(() => out.includes('legit'), 30_000);
    expect(out).not.toContain('10.9.9.9');
    expect(out).not.toContain('forged');
    expect(out).not.toContain('direct');
    srv.kill('SIGKILL');
    await done;
  });
});
