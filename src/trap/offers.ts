/** Fast-path offers: same-host connections set up over a Unix socket pair, waiting for the server's accept — the
 * server's end of the pair and a placeholder TCP socket, held by the daemon until an accept (or, for an offer pushed
 * to the server's generator with AS_OFFER, an AS_CLAIMED) takes them, or they expire. It holds descriptors and closes
 * them through the injected closeFds; no other I/O. */
import { type Endpoint, endpointKey } from '../table/endpoint.js';
import type { ClientIdentity, ClientReports } from './client-reports.js';
import type { ConnectionTracker } from './connections.js';
import { CountedMap } from './limits.js';
import { encodeSockaddr, MsgFlag, type Reply } from './protocol.js';

/** A fast-path connection the server has not accepted within this time is given up (its fds closed). */
const OFFER_TTL_MS = 60_000;

export interface OfferStats {
  /** Fast-path offers the server never accepted. */
  offersExpired: number;
}

export interface OffersDeps {
  nodeName: string;
  stats: OfferStats;
  /** Closes descriptors (an empty list is never passed on). */
  closeFds: (fds: number[]) => void;
  /** The client reports: an offer claimed by AS_CLAIMED needs no report for an accept any more. */
  reports: Pick<ClientReports, 'forget'>;
  connections?: Pick<ConnectionTracker, 'accepted' | 'offerExpired'>;
}

/** A fast-path connection waiting for the server's accept: [server's end of the socket pair, placeholder] until the
 * end is pushed to the server's generator (then [placeholder]; [] once that is gone too). */
interface Offer {
  fds: number[];
  at: number;
  /** The client app (whose connect made it). */
  client: string;
  pushed?: boolean;
  who?: ClientIdentity;
  dst?: Endpoint;
  /** The server app, when known (speculative offers). */
  server?: string;
}

/** Per-app counters of offers that still hold descriptors in the daemon (see AppLimits.pendingPerApp). */
function offerOwners(o: Offer): string[] {
  if (!o.fds.length) return [];
  return o.server !== undefined ? [`c/${o.client}`, `s/${o.server}`] : [`c/${o.client}`];
}

export class Offers {
  /** By the placeholder's real client endpoint "ip:port". */
  private readonly offers = new CountedMap<string, Offer>(offerOwners);

  constructor(private readonly deps: OffersDeps) {}

  /** Holds a new connection's [server's end, placeholder] under `key`, replacing (and closing) an older one there. */
  hold(key: string, fds: number[], client: string, server?: string): void {
    const old = this.offers.get(key);
    if (old) this.deps.closeFds(old.fds);
    const offer: Offer = { fds, at: Date.now(), client };
    if (server !== undefined) offer.server = server;
    this.offers.set(key, offer);
  }

  /** Offers holding descriptors of `owner`: `c/APP` as client, `s/APP` as server. */
  count(owner: string): number {
    return this.offers.count(owner);
  }

  /** Fast-path connections waiting for an accept. */
  get pending(): number {
    let n = 0;
    for (const o of this.offers.values()) if (o.fds.length) n++;
    return n;
  }

  /** A connect with a speculative offer, decided for the fast path, whose placeholder `placeholder` has been held:
   * the reply gets a push (AS_OFFER with the server's end `fd`) for the server's generator, which the trap server
   * sends before the reply, so the server's accept() finds the connection's real socket waiting. */
  push(reply: Reply, placeholder: Endpoint, who: ClientIdentity, pick: { appId: string; endpoint: Endpoint }, fd: number): Reply {
    const key = endpointKey(placeholder);
    const offer = this.offers.get(key);
    if (!offer) return reply;
    offer.who = who;
    offer.dst = pick.endpoint;
    reply.flags = (reply.flags ?? 0) | MsgFlag.OFFER;
    reply.push = {
      appId: pick.appId,
      addr: encodeSockaddr({ ip: pick.endpoint.ip, port: placeholder.port }),
      addr2: encodeSockaddr({ ip: who.identity, port: placeholder.port }),
      fd,
      sent: (ok) => {
        if (!ok || this.offers.get(key) !== offer) return; /* not sent: the server's ACCEPT claims it as before */
        offer.pushed = true;
        offer.fds = offer.fds.slice(1); /* the trap server owns the server's end now; the placeholder stays here */
      },
    };
    return reply;
  }

  /** An accept of the connection from `key`: a waiting offer becomes the accept's reply (its flags and descriptors). */
  claimByAccept(key: string, reply: Reply): void {
    const offer = this.offers.get(key);
    if (offer?.pushed) {
      /* its socket is in the generator's hands already (AS_OFFER came before this reply) */
      this.offers.delete(key);
      this.deps.closeFds(offer.fds);
      reply.flags = MsgFlag.OFFERED;
    } else if (offer) {
      /* the program gets the server's end of the socket pair; the placeholder has done its job (woken the server) */
      this.offers.delete(key);
      const [serverEnd, placeholder] = offer.fds as [number, number];
      this.deps.closeFds([placeholder]);
      reply.flags = MsgFlag.FASTPATH;
      reply.fds = [serverEnd];
    }
  }

  /** The server's generator took pushed offers at accept() (a batch, see AS_CLAIMED in native/proto.h): their
   * placeholders (they woke the server) can go. */
  claimed(app: { id: string }, peers: Endpoint[]): void {
    for (const peer of peers) {
      const key = endpointKey(peer);
      const offer = this.offers.get(key);
      if (!offer?.pushed) continue;
      this.offers.delete(key);
      this.deps.closeFds(offer.fds);
      this.deps.reports.forget(key);
      if (offer.who) this.deps.connections?.accepted({ appId: app.id }, this.deps.nodeName, peer, offer.dst, offer.who);
    }
  }

  /** Offers pushed to an app that ended: nobody will claim them now. */
  dropPushedTo(appId: string): void {
    for (const [k, o] of this.offers) {
      if (o.pushed && o.server === appId) {
        this.offers.delete(k);
        this.deps.closeFds(o.fds);
      }
    }
  }

  /** Gives up fast-path connections no server accepted in time (the client then sees the connection close), and
   * placeholders no longer open (`liveLocal`: the open local endpoints, read at `snapshotAt`). */
  expire(now: number, liveLocal: Set<string> | undefined, snapshotAt: number): void {
    for (const [k, o] of this.offers) {
      /* Gone: the placeholder is no longer an open socket: the server's listener closed and reset the connections in
       * its accept queue, the program ended, its client was killed before connecting it, or (pushed offers) the
       * server's generator took it and reset it. */
      const gone = liveLocal !== undefined && o.at < snapshotAt && !liveLocal.has(k);
      if (o.pushed) {
        /* the server's generator has the socket (and expires it itself): only our copy of the placeholder goes; the
         * record stays for the claim (connection tracking) until the TTL */
        if (gone && o.fds.length) {
          this.deps.closeFds(o.fds);
          this.offers.delete(k); /* re-inserted without descriptors: it no longer counts against the apps' limits */
          o.fds = [];
          this.offers.set(k, o);
        }
        if (now - o.at >= OFFER_TTL_MS) {
          this.offers.delete(k);
          if (o.fds.length) { /* the placeholder was never claimed nor seen gone: ours to close (it leaked before) */
            this.deps.closeFds(o.fds);
            o.fds = [];
            this.deps.stats.offersExpired++;
          }
        }
        continue;
      }
      if (!gone && now - o.at < OFFER_TTL_MS) continue;
      this.offers.delete(k);
      this.deps.closeFds(o.fds);
      this.deps.stats.offersExpired++;
      this.deps.connections?.offerExpired(k);
    }
  }
}
