/** An outside client that holds one connection open, for the `get connections` checks of the ingress tests: the
 * server (peer-http.py, threaded) waits for a request that never comes, so both ends stay open until the client
 * goes. */
import type { ChildProcess } from 'node:child_process';
import { request } from '../../src/cli/client.js';
import type { ConnectionView } from '../../src/trap/connections.js';
import { type TestHost, waitFor } from './hosts.js';

const HOLD = 'import socket,sys,time\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])))\nprint("%s:%d" % s.getsockname()[:2],flush=True)\nsys.stdin.read()';

/** From `out` to ip:port: the client's own endpoint, and a close that ends it (its stdin closes). */
export async function holdConnection(out: TestHost, ip: string, port: number): Promise<{ endpoint: string; proc: ChildProcess; close: () => void }> {
  const proc = out.spawn(['python3', '-c', HOLD, ip, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let line = '';
  proc.stdout?.on('data', (d: Buffer) => (line += d.toString()));
  await waitFor(() => line.includes('\n'), 10_000, 20);
  return { endpoint: line.trim(), proc, close: () => proc.stdin?.end() };
}

/** The rows of `get connections` on `h` whose client endpoint is `endpoint`. */
export async function connectionsOf(h: TestHost, endpoint: string): Promise<ConnectionView[]> {
  return (await request<ConnectionView[]>(h.socket, 'connections')).filter((c) => c.clientEndpoint === endpoint);
}
