/** The virtual DNS address (trap/virtual-dns.ts): what the trap handler answers a connect or send to 169.254.0.53,
 * which nameserver programs' resolv.conf names, and the config check that keeps the address out of vip ranges. */
import { describe, expect, it } from 'vitest';
import { handlerConfig } from '../helpers/handler-config.js';
import { resolveConfig } from '../../src/daemon/config.js';
import { programsNameserver } from '../../src/daemon/daemon.js';
import { Errno } from '../../src/errors.js';
import { VIRTUAL_DNS_ADDRESS } from '../../src/table/addresses.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { TrapHandler } from '../../src/trap/handler.js';
import { AF_INET6, decodeSockaddr, encodeSockaddr, MsgType, SOCK_DGRAM, SOCK_STREAM } from '../../src/trap/protocol.js';
import { request } from '../helpers/trap-request.js';
import { VirtualDns } from '../../src/trap/virtual-dns.js';

function handler(dnsPort: number): { h: TrapHandler; app: AppRecord; table: ServiceTable } {
  const table = new ServiceTable();
  const h = new TrapHandler(handlerConfig(table, { virtualDns: new VirtualDns({ ip: '192.0.2.1', port: dnsPort }) }));
  const app = h.hello({ tags: {}, cmd: ['resolver'] }, 1, 0) as AppRecord;
  return { h, app, table };
}

function connect(h: TrapHandler, app: AppRecord, ip: string, port: number, type: number, family?: number) {
  const r = h.connect(app, request('connect', { type: MsgType.CONNECT, seq: 1, arg: type, addr: encodeSockaddr({ ip, port }, family) }));
  return { result: r.result, real: r.addr && decodeSockaddr(r.addr), shown: r.addr2 && decodeSockaddr(r.addr2) };
}

describe('virtual DNS address', () => {
  it('a connect or send to 169.254.0.53:53 (UDP and TCP, IPv4 and v4-mapped) reaches the node address at --dns-port and shows the virtual address', () => {
    const { h, app } = handler(5353);
    for (const type of [SOCK_DGRAM, SOCK_STREAM]) {
      for (const family of [undefined, AF_INET6]) {
        expect(connect(h, app, VIRTUAL_DNS_ADDRESS, 53, type, family)).toEqual({
          result: 0,
          real: { ip: '192.0.2.1', port: 5353 },
          shown: { ip: VIRTUAL_DNS_ADDRESS, port: 53 },
        });
      }
    }
  });

  it('other ports of the virtual address are refused, and it is not an egress destination', () => {
    const { h, app } = handler(5353);
    expect(connect(h, app, VIRTUAL_DNS_ADDRESS, 80, SOCK_STREAM).result).toBe(-Errno.ECONNREFUSED);
    expect(connect(h, app, VIRTUAL_DNS_ADDRESS, 5353, SOCK_DGRAM).result).toBe(-Errno.ECONNREFUSED);
    expect(h.stats.egress).toBe(0);
    // a neighbour in the identity range is still a virtual address with no service behind it
    expect(connect(h, app, '169.254.0.54', 53, SOCK_DGRAM).result).toBe(-Errno.ECONNREFUSED);
  });

  it("a TCP query's connection report is not kept waiting for an accept that never comes", () => {
    const { h, app } = handler(5353);
    const before = h.stats.tcpConnections;
    const report = (dst: { ip: string; port: number }): void =>
      h.connected(app, request('connected', { type: MsgType.CONNECTED, seq: 2, addr: encodeSockaddr({ ip: '192.0.2.1', port: 41000 }), addr2: encodeSockaddr(dst) }));
    report({ ip: '192.0.2.1', port: 5353 });
    expect(h.stats.tcpConnections).toBe(before);
    report({ ip: '192.0.2.1', port: 40001 }); /* any other destination is recorded as before */
    expect(h.stats.tcpConnections).toBe(before + 1);
  });

  it("programs' resolv.conf names the node address on port 53 and the virtual address on any other port or a loopback node address", () => {
    expect(programsNameserver({ nodeAddress: '192.0.2.1', dnsPort: 53 })).toBe('192.0.2.1');
    expect(programsNameserver({ nodeAddress: '192.0.2.1', dnsPort: 5353 })).toBe(VIRTUAL_DNS_ADDRESS);
    /* a loopback node address (a host with no other address) is the program's own loopback inside its namespace */
    expect(programsNameserver({ nodeAddress: '127.0.0.1', dnsPort: 53 })).toBe(VIRTUAL_DNS_ADDRESS);
    expect(programsNameserver({ nodeAddress: '::1', dnsPort: 53 })).toBe(VIRTUAL_DNS_ADDRESS);
  });

  it('a --vip-cidr holding the virtual DNS address is refused', () => {
    expect(() => resolveConfig({ nodeAddress: '192.0.2.1', vipCidr: ['169.254.0.0/24'], dnsServers: ['192.0.2.53'] })).toThrow(/virtual DNS address/);
    expect(resolveConfig({ nodeAddress: '192.0.2.1', vipCidr: ['10.0.0.0/8'], dnsServers: ['192.0.2.53'] }).vipCidrs).toEqual(['10.0.0.0/8']);
  });
});
