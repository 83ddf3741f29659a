/** Listening on a TCP address (the metrics endpoint, the live view, the HTTP API's TCP listener). */
import type { AddressInfo, Server } from 'node:net';
import ipaddr from 'ipaddr.js';

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, or an IPv4-mapped 127.x): reachable from this host only. */
export function isLoopbackHost(host: string): boolean {
  return ipaddr.isValid(host) && ipaddr.process(host).range() === 'loopback';
}

/** Listens on host:port; resolves with the address actually bound ("host:port", "[v6]:port"), rejects with the listen
 * error. Errors after that go to `onError`. */
export function listenAddress(server: Server, host: string, port: number, onError: (e: NodeJS.ErrnoException) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.on('error', onError);
      const a = server.address() as AddressInfo;
      resolve(a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    });
  });
}
