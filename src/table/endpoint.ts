/** Endpoints of the service table and the trap path, in their canonical text form: an address and a port, with no
 * wire encoding (that is trap/protocol.ts). Pure: no I/O. */
import ipaddr from 'ipaddr.js';

/** An endpoint in its canonical text form: IPv4 dotted (IPv4-mapped IPv6 is unmapped), IPv6 compressed. */
export interface Endpoint {
  ip: string;
  port: number;
}

/** Canonical text of an address: IPv4-mapped IPv6 becomes IPv4. Throws on anything that is not an IP. */
export function canonicalIp(ip: string): string {
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) return (a as ipaddr.IPv6).toIPv4Address().toString();
  return a.toString();
}

/** "ip:port" of an endpoint (IPv6 without brackets: the port follows the last colon), the key of the daemon's maps. */
export function endpointKey(e: Endpoint): string {
  return `${e.ip}:${e.port}`;
}
