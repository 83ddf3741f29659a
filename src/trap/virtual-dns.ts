/** The virtual DNS address: a trapped connect or datagram to VIRTUAL_DNS_ADDRESS:53 (UDP or TCP) goes to this node's
 * DNS server at --node-address:--dns-port, whatever that port is, and the program keeps seeing the virtual address
 * (getpeername: the generator maps the real endpoint to addr2). resolv.conf cannot carry a port, so this is how a
 * DNS server on a port other than 53 reaches programs; and the host's own port 53 (systemd-resolved, dnsmasq) is
 * never needed. Any other port of the virtual address is refused: nothing listens there. Pure: no I/O. */
import { Errno } from '../errors.js';
import { VIRTUAL_DNS_ADDRESS, VIRTUAL_DNS_PORT } from '../table/addresses.js';
import type { Endpoint } from '../table/endpoint.js';
import { encodeSockaddr } from './protocol.js';

/** What a connect or send to the virtual DNS address is answered: the real destination (addr) and the name the
 * program sees (addr2), or an errno. */
export interface VirtualDnsReply {
  result: number;
  addr?: Buffer;
  addr2?: Buffer;
}

export class VirtualDns {
  private readonly realKey: string;

  /** `server`: the daemon's DNS server (the node address and --dns-port). */
  constructor(readonly server: Endpoint) {
    this.realKey = `${server.ip}:${server.port}`;
  }

  /** The reply to a connect/send to `dst`, when `dst` is the virtual DNS address; undefined for any other address.
   * `dst.ip` is in the canonical text form of decodeSockaddr (a v4-mapped IPv6 address shows as IPv4). */
  reply(dst: Endpoint): VirtualDnsReply | undefined {
    if (dst.ip !== VIRTUAL_DNS_ADDRESS) return undefined;
    if (dst.port !== VIRTUAL_DNS_PORT) return { result: -Errno.ECONNREFUSED };
    return { result: 0, addr: encodeSockaddr(this.server), addr2: encodeSockaddr(dst) };
  }

  /** Whether `ep` is the DNS server's real endpoint (a client connection there is reported by the generator like any
   * connection to a virtual endpoint, but no trapped server will ever claim it). */
  isServer(ep: Endpoint | undefined): boolean {
    return ep !== undefined && `${ep.ip}:${ep.port}` === this.realKey;
  }
}
