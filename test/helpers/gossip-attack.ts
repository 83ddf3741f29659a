/** Shared pieces of the gossip and peer API attack tests (test/security/gossip-*.test.ts, peer-*.test.ts): a server
 * under appswitch that answers its own id, a client that tallies answers, and the forging program. */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { request } from '../../src/cli/client.js';
import type { MemberView, ServiceView } from '../../src/daemon/control-protocol.js';
import { ROOT, type TestHost, waitFor } from './hosts.js';

export const FORGE = path.join(ROOT, 'test/helpers/gossip-forge.mjs');

export const services = (h: TestHost): Promise<ServiceView[]> => request<ServiceView[]>(h.socket, 'services');
export const members = (h: TestHost): Promise<MemberView[]> => request<MemberView[]>(h.socket, 'members');

/** Waits until every host sees `n` alive members. */
export async function waitMembers(hosts: TestHost[], n: number): Promise<void> {
  for (const h of hosts) await waitFor(async () => (await members(h)).filter((m) => m.state === 'alive').length === n, 20_000);
}

/** A TCP server under appswitch that writes `id` to every connection and closes it. */
export function idServer(h: TestHost, appArgs: string[], port: number, id: string): ChildProcess {
  const py = `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("0.0.0.0",${port})); s.listen(64)\nwhile True:\n  c,_=s.accept()\n  try: c.sendall(b"${id}\\n")\n  except Exception: pass\n  c.close()`;
  return h.run(appArgs, ['python3', '-c', py]);
}

/** The same server outside appswitch, on a given address (a host service, or an attacker's own listener). */
export function plainServer(h: TestHost, host: string, port: number, id: string): ChildProcess {
  const py = `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("${host}",${port})); s.listen(64)\nwhile True:\n  c,_=s.accept()\n  try: c.sendall(b"${id}\\n")\n  except Exception: pass\n  c.close()`;
  return h.spawn(['python3', '-c', py]);
}

/** A client under appswitch that connects n times (one connection each) and counts what it read. */
export async function tally(h: TestHost, appArgs: string[], ip: string, port: number, n: number): Promise<{ counts: Record<string, number>; raw: string }> {
  const py = `import socket,collections,json\nc=collections.Counter()\nfor i in range(${n}):\n  try:\n    s=socket.create_connection(("${ip}",${port}),timeout=5); d=s.makefile().readline().strip(); s.close(); c[d or "empty"]+=1\n  except Exception as x: c["error:"+type(x).__name__]+=1\nprint(json.dumps(c))`;
  const r = await h.runToEnd(appArgs, ['python3', '-c', py], 120_000);
  let counts: Record<string, number> = {};
  try {
    counts = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
  } catch {
    counts = { 'no-output': 1 };
  }
  return { counts, raw: r.stdout + r.stderr };
}

/** One forged message (see gossip-forge.mjs). */
export type ForgedMessage = (
  | { kind: 'alive'; node: string; addr: string; incarnation: number; epoch: number }
  | { kind: 'kv'; node: string; epoch: number; version: number; key: string; value: unknown }
) & { to?: string[] };

/** A service entry as a node publishes it in its gossip store. */
export function entryValue(node: string, key: string, vip: string, port: number, endpoint: { ip: string; port: number }, tags: Record<string, string>): unknown {
  return { id: key, vip, port, proto: 'tcp', node, endpoint, appId: key.split('/')[1], tags, version: 1 };
}

/** Runs the forging program in h's namespace, plainly (`how: 'plain'`) or under `appswitch run`. */
export async function forge(h: TestHost, how: 'plain' | 'trapped', spec: { targets: string[]; messages: ForgedMessage[]; rounds?: number; key?: string }): Promise<string> {
  const args = ['node', FORGE, JSON.stringify(spec)];
  const r = how === 'plain' ? await h.exec(args, 60_000) : await h.runToEnd([], args, 60_000);
  return r.stdout + r.stderr;
}
