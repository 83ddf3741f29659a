/** Client identities: who is behind a client endpoint, for the servers' accepts and datagram receivers — the
 * connections this node's clients report (TCP and fast path), the accept that asks who its peer is (here, or through
 * the peer API for another node's client), and the same for UDP senders. Performs no I/O of its own: descriptors go
 * to the offers, other nodes are asked through the injected resolvePeer. */
import type { Logger } from 'pino';
import { Errno } from '../errors.js';
import { isLoopback, isUnspecified } from '../table/addresses.js';
import { type Endpoint, endpointKey } from '../table/endpoint.js';
import type { AppRecord } from './apps.js';
import type { ClientIdentity, ClientReports } from './client-reports.js';
import type { ConnectionTracker } from './connections.js';
import type { EgressAsked } from './egress-route.js';
import type { RateLimitedLog } from './limits.js';
import type { Offers } from './offers.js';
import type { ConnectObserver } from './observer.js';
import { encodeSockaddr, MsgFlag, type Reply, type RequestOf } from './protocol.js';
import type { UdpIdentity } from './udp-identity.js';
import type { VirtualDns } from './virtual-dns.js';

/** Asks the daemon of another node who a client endpoint of that node is (see daemon/peers.ts); `dst`, the server's
 * real endpoint, lets that daemon find the client's socket in its kernel. */
export type PeerResolver = (peerIp: string, endpoint: string, dst?: string, proto?: 'udp') => Promise<ClientIdentity | undefined>;

export interface ClientStats {
  unidentified: number;
  /** Client connections reported by generators, by path. */
  tcpConnections: number;
  fastpathConnections: number;
  /** Fast-path connections whose descriptors the daemon had no room for (reset; see connectedLost). */
  fastpathLost: number;
  /** Datagram senders nobody vouched for (their datagrams are dropped, see udp-identity.ts). */
  udpUnidentified: number;
  /** Connections refused at accept whose client was said to be external (an exposure's outside client) when the
   * service is not exposed, or the answering node is not a live gateway. */
  externalRefused: number;
}

/** A connection the kernel steered to an app's listener (gateway/steering.ts): the outside client as its identity, or
 * why it is refused. */
export type SteeredVerdict = { who: ClientIdentity; refused?: undefined } | { refused: string; who?: undefined };

/** Judges an accepted connection whose local end `local` may be a steered host port (undefined: not steered). */
export type SteeredCheck = (app: AppRecord, peer: Endpoint, local: Endpoint | undefined) => SteeredVerdict | undefined;
/** Why an external client identity may not reach this app's listener (undefined: it may): `via` is the node that
 * answered for the client (its address), or 'local' when this node's own gateway did. See gateway/ingress.ts. */
export type ExternalCheck = (app: AppRecord, listener: Endpoint | undefined, via: string | 'local') => string | undefined;

export interface ClientIdentitiesDeps {
  nodeName: string;
  nodeAddress: string;
  log: Logger;
  limitLog: RateLimitedLog;
  stats: ClientStats;
  /** AppLimits.pendingPerApp: reports one app may have waiting for an accept. */
  pendingPerApp: number;
  /** How long an accept waits for a client's report that may still be on its way (ms). */
  identityWaitMs: number;
  reports: ClientReports;
  udp: UdpIdentity;
  offers: Pick<Offers, 'hold' | 'claimByAccept'>;
  /** Closes descriptors (an empty list is never passed on). */
  closeFds: (fds: number[]) => void;
  resolvePeer?: PeerResolver;
  connections?: Pick<ConnectionTracker, 'connected' | 'accepted'>;
  inodeOf?: (fd: number) => string | undefined;
  virtualDns?: Pick<VirtualDns, 'isServer'>;
  /** Connections steered by sk_lookup to a local instance of an exposure (gateway/steering.ts). */
  steeredClient?: SteeredCheck;
  /** Judges external client identities; without it every external identity is refused. */
  externalCheck?: ExternalCheck;
  /** Destinations that connects sent through an egress gateway asked for, by socket (see egress-route.ts). */
  egressAsked?: Pick<EgressAsked, 'take'>;
  /** See HandlerConfig.unclaimed: destinations whose connections no appswitch accept claims. */
  unclaimed?: (dst: Endpoint) => boolean;
  /** Told of connections dropped at accept because nobody vouched for them. */
  observer?: Pick<ConnectObserver, 'unidentified'>;
}

/** "ip:port" of an optional endpoint (v4-mapped IPv6 shown as IPv4), or undefined. */
function keyOf(e: Endpoint | undefined): string | undefined {
  return e ? `${e.ip.replace(/^::ffff:/i, '')}:${e.port}` : undefined;
}

export class ClientIdentities {
  constructor(private readonly deps: ClientIdentitiesDeps) {}

  /** A client's connect left from `req.local`: remember who it is, for the server's accept. A fast-path report
   * carries fds (the server's end of the socket pair, the placeholder), held until the server's accept claims them. */
  connected(app: AppRecord, req: RequestOf<'connected'>, fds: number[] = []): void {
    if (req.fast && fds.length !== 2) {
      this.deps.closeFds(fds);
      return;
    }
    if (!req.fast && this.deps.virtualDns?.isServer(req.dst)) return; /* a TCP query to the virtual DNS address: no server claims it */
    const asked = !req.fast && req.socket !== undefined ? this.deps.egressAsked?.take(app.id, req.socket) : undefined;
    this.record(app, req.local, req.dst, req.fast, fds, undefined, asked);
  }

  /** Remembers a client connection leaving from `local` (who it is, for the server's accept) and, for the fast path,
   * its offer [server's end, placeholder]. */
  record(app: AppRecord, local: Endpoint, dst: Endpoint | undefined, fast: boolean, fds: number[], server?: string, egress?: Endpoint): ClientIdentity {
    const key = endpointKey(local);
    if (fast) {
      this.deps.stats.fastpathConnections++;
      this.deps.offers.hold(key, fds, app.id, server);
    } else {
      this.deps.closeFds(fds);
      this.deps.stats.tcpConnections++;
    }
    const c: ClientIdentity = { identity: app.identity, appId: app.id, tags: app.tags };
    if (egress) c.egress = endpointKey(egress); /* sent through an egress gateway: where the app asked to go */
    this.deps.connections?.connected(c, local, dst, fast ? 'fastpath' : 'tcp', fast ? this.deps.inodeOf?.(fds[0] as number) : undefined);
    if (dst && this.deps.unclaimed?.(dst)) return c; /* a virtual service's backend: no accept will claim a report */
    this.deps.reports.report(key, c, dst);
    if (this.deps.reports.count(app.id) > this.deps.pendingPerApp) this.deps.reports.dropOldest(app.id); /* reports of connects under way can overshoot */
    return c;
  }

  /** A same-host TCP connect its generator decided (AS_DECIDED): remembered for an accept that asks the daemon after
   * all (the server's generator did not find it in the host's identity table). Not counted: the record was. */
  reportDecided(app: AppRecord, local: Endpoint, dst: Endpoint): void {
    if (this.deps.unclaimed?.(dst)) return; /* a virtual service's backend: no accept will claim it */
    this.deps.reports.report(`${local.ip}:${local.port}`, { identity: app.identity, appId: app.id, tags: app.tags }, dst);
    if (this.deps.reports.count(app.id) > this.deps.pendingPerApp) this.deps.reports.dropOldest(app.id);
  }

  /** A fast-path report whose descriptors the daemon had no room for (MSG_CTRUNC): the kernel closed them, so the
   * placeholder is reset and the client's end of the pair sees ECONNRESET (the sentinel byte, see proto.h). The
   * server's accept of that placeholder is refused at once, not after waiting identityWaitMs for a report that will
   * never come: a server accepting one connection at a time would otherwise fall behind by that much per lost
   * connection, and everything queued behind them would wait too. */
  connectedLost(app: AppRecord, local: Endpoint): void {
    const key = endpointKey(local);
    this.deps.stats.fastpathLost++;
    this.deps.reports.markLost(key);
    this.deps.log.debug({ app: app.id, client: app.identity, local: key }, 'fast-path connection lost: its descriptors did not fit');
  }

  /** Who connected from this node's endpoint `key` (see ClientReports.claim); the answer is claimed. */
  whoIsLocal(key: string, waitMs: number, dst?: string): Promise<ClientIdentity | undefined> {
    return this.deps.reports.claim(key, waitMs, dst);
  }

  /** Who a client of this node connected from `key` to `dst` is, asking the kernel first (see ClientReports.identify):
   * the peer API's look-up. */
  identifyLocal(key: string, dst: string | undefined): Promise<ClientIdentity | undefined> {
    return this.deps.reports.identify(key, dst);
  }

  /** A connection reached a server of this app: answer its peer's identity, or refuse an unidentified peer. */
  async accept(app: AppRecord, req: RequestOf<'accept'>): Promise<Reply> {
    const { peer } = req;
    const key = endpointKey(peer);
    const local = peer.ip === this.deps.nodeAddress || isLoopback(peer.ip);
    if (local && this.deps.reports.takeLost(key)) return { result: -Errno.ECONNREFUSED }; /* reset already: see connectedLost */
    const steered = this.deps.steeredClient?.(app, peer, req.listener);
    if (steered?.refused !== undefined) {
      this.deps.stats.unidentified++;
      this.deps.limitLog.warn(`steered/${app.id}`, { app: app.id, server: app.identity, peer: key, local: keyOf(req.listener), why: steered.refused }, 'steered connection refused at accept');
      return { result: -Errno.ECONNREFUSED };
    }
    let who: ClientIdentity | undefined = steered?.who; /* an outside client steered here by the kernel: no report to wait for */
    const dst = keyOf(req.listener);
    if (who) {
      /* identified */
    } else if (local) who = await this.deps.reports.identify(key, dst);
    else if (this.deps.resolvePeer) who = await this.deps.resolvePeer(peer.ip, key, dst);
    if (!who && local && this.deps.reports.takeLost(key)) return { result: -Errno.ECONNREFUSED };
    if (!who) {
      this.deps.stats.unidentified++;
      this.deps.log.warn({ app: app.id, server: app.identity, peer: key }, 'unidentified connection dropped at accept');
      this.deps.observer?.unidentified(app, peer, req.listener);
      return { result: -Errno.ECONNREFUSED };
    }
    if (who.external) {
      const why = this.deps.externalCheck ? this.deps.externalCheck(app, req.listener, local ? 'local' : peer.ip) : 'no ingress on this node';
      if (why !== undefined) {
        this.deps.stats.externalRefused++;
        this.deps.limitLog.warn(`external/${app.id}`, { app: app.id, server: app.identity, peer: key, client: who.identity, why }, 'external client refused at accept');
        return { result: -Errno.ECONNREFUSED };
      }
    }
    const reply: Reply = { result: 0, addr: encodeSockaddr({ ip: who.identity, port: who.external && who.port !== undefined ? who.port : peer.port }) };
    /* An outside client not steered here came through a gateway's forwarder: its connection starts with the preamble,
     * which names the client; the generator checks it, takes it out before the program reads, shows the program that
     * client and reports the connection (AS_CLAIMED, as the preambles it answers by itself: native/gen_preamble.c). */
    if (who.external && !steered) reply.flags = MsgFlag.RELAYED;
    else this.deps.connections?.accepted({ appId: app.id }, this.deps.nodeName, peer, req.listener, who);
    this.deps.offers.claimByAccept(key, reply);
    return reply;
  }

  /** A UDP socket of the app sends from `req.local` (reported before its first datagram, see UdpIdentity). */
  udpFrom(app: AppRecord, req: RequestOf<'udpFrom'>): void {
    const ip = isUnspecified(req.local.ip) ? this.deps.nodeAddress : req.local.ip; /* it sends from the node address */
    this.deps.udp.report(app.id, `${ip}:${req.local.port}`, req.socket);
  }

  /** Who a UDP sender of this node is, for another node's question (the peer API). */
  identifyUdpLocal(key: string): Promise<ClientIdentity | undefined> {
    return this.deps.udp.localWait(key);
  }

  /** A datagram from real endpoint `req.src` reached this app's socket at `req.local`: answer the sender's identity
   * (and remember the way back to it), or refuse an unidentified sender (its datagrams are dropped). */
  async udpWho(app: AppRecord, req: RequestOf<'udpWho'>): Promise<Reply> {
    const { src } = req;
    const key = endpointKey(src);
    const local = src.ip === this.deps.nodeAddress || isLoopback(src.ip);
    let who: ClientIdentity | undefined;
    if (local) who = await this.deps.udp.localWait(key);
    else if (this.deps.resolvePeer) who = await this.deps.resolvePeer(src.ip, key, keyOf(req.local), 'udp');
    if (!who) {
      this.deps.stats.udpUnidentified++;
      this.deps.limitLog.warn(`udp-unidentified/${app.id}`, { app: app.id, server: app.identity, peer: key }, 'datagrams from an unidentified sender dropped');
      return { result: -Errno.ENOENT };
    }
    const seen: Endpoint = { ip: who.identity, port: who.port ?? src.port };
    this.deps.udp.learn(app.id, seen, src);
    return { result: 0, addr: encodeSockaddr(seen) };
  }
}
