/** Sockets for the sweep's tests and bench (test/unit/sockdiag-dump.test.ts, bench/sweep.ts), made in the caller's
 * network namespace, which must be a fresh one (`unshare --net`): only loopback is used. TIME_WAIT sockets come from
 * connections that the client closes first (the side that closes first keeps the TIME_WAIT, 60 s). */
import { execFileSync } from 'node:child_process';
import net from 'node:net';

/** Brings lo up, widens the ephemeral port range so that one listener can take ~64k client ports, and turns off the
 * reuse of TIME_WAIT ports by new connects (on by default for loopback: it would recycle the sockets being counted).
 * Both sysctls are the namespace's own. */
export function prepareNamespace(): void {
  execFileSync('ip', ['link', 'set', 'lo', 'up'], { stdio: 'pipe' });
  execFileSync('sysctl', ['-q', '-w', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=0'], { stdio: 'pipe' });
}

/** A listener that answers each client's FIN with its own (so the client, which closed first, goes to TIME_WAIT and
 * this side is gone at the client's last ACK). */
export async function listen(host: string, port = 0): Promise<net.Server> {
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('end', () => s.end());
    s.resume();
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host, port, backlog: 4096 }, resolve);
  });
  return srv;
}

export function portOf(srv: net.Server): number {
  return (srv.address() as net.AddressInfo).port;
}

/** A connected client (kept open) to host:port. */
export async function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host, port }, () => resolve(c));
    c.once('error', reject);
  });
}

/** Makes `n` client TIME_WAIT sockets to host:port (`parallel` connections at a time); returns their local ports. */
export async function timeWaits(host: string, port: number, n: number, parallel = 64): Promise<number[]> {
  const ports: number[] = [];
  let started = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const c = net.connect({ host, port }, () => {
        ports.push(c.localPort as number);
        c.end(); /* FIN first: this side keeps the TIME_WAIT */
      });
      c.on('error', reject);
      c.resume();
      c.on('close', () => resolve());
    });
  const worker = async (): Promise<void> => {
    while (started < n) {
      started++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
  return ports;
}

/** TIME_WAIT rows of /proc/net/tcp and tcp6 (state 06), counted without keeping the text. */
export function procTimeWaits(text: string): number {
  let n = 0;
  for (const row of text.split('\n')) if (row.trim().split(/\s+/)[3] === '06') n++;
  return n;
}
