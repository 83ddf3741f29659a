/** Which TCP sockets are listening in this network namespace, by inode (/proc/net/tcp, /proc/net/tcp6; proc(5)).
 * The daemon compares them with its services to notice a program closing its listening socket. */
import { readFile } from 'node:fs/promises';

const TCP_LISTEN = '0A';

export function parseListening(text: string, into: Set<string>): void {
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    const f = (lines[i] as string).trim().split(/\s+/);
    if (f.length > 9 && f[3] === TCP_LISTEN) into.add(f[9] as string);
  }
}

export async function listeningInodes(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      parseListening(await readFile(file, 'utf8'), out);
    } catch {
      /* no IPv6 in this kernel: nothing listens there */
    }
  }
  return out;
}
