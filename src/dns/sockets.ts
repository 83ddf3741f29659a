// The DNS server's I/O boundary: how it creates sockets. The default uses node:dgram and node:net; tests or the
// daemon may inject another factory (e.g. to count or fail socket creation).

import dgram from 'node:dgram';
import net from 'node:net';

/**
 * Creates the sockets the DNS server uses. Contract: each call returns a new, unbound / unconnected object;
 * the server binds, connects, listens and closes them itself and attaches its own 'error' listeners.
 */
export interface DnsSocketFactory {
  /** A UDP socket, for the listening socket and for one upstream query. */
  createUdpSocket(type: 'udp4' | 'udp6'): dgram.Socket;
  /** A TCP server, not yet listening. */
  createTcpServer(): net.Server;
  /** A TCP connection to an upstream server, connecting. */
  connectTcp(host: string, port: number): net.Socket;
}

/** Real sockets. */
export const nodeSocketFactory: DnsSocketFactory = {
  createUdpSocket(type: 'udp4' | 'udp6'): dgram.Socket {
    return dgram.createSocket({ type, reuseAddr: false });
  },
  createTcpServer(): net.Server {
    return net.createServer({ allowHalfOpen: false, pauseOnConnect: false });
  },
  connectTcp(host: string, port: number): net.Socket {
    return net.connect({ host, port });
  },
};
