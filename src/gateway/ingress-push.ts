/** Outside clients pushed across hosts (docs/ingress.md, "The external client's identity"). A gateway's relay reports
 * each external connection it makes (its own socket `from`, the instance's real endpoint `to`, the outside `client`);
 * when `to` is on another node, the gateway daemon pushes the record to that node's daemon through the peer API (one
 * signed line per peer per event-loop turn: IngressPusher), instead of waiting to be asked (whoIs). The instance's
 * daemon believes a push only from a live gateway member, only for that gateway's own sockets, and only for a
 * service endpoint of this node whose service is exposed now (PushedClients); then it writes the outside client into
 * the host's identity table, so the instance's generator answers the accept itself, and keeps the record for an
 * accept that asks the daemon after all. Anything else is dropped, counted and logged (rate-limited). The whoIs path
 * stays: a gateway that does not push, or a push that comes too late, is asked as before.
 * Performs no I/O of its own: the peer API sends, the native addon writes the table. */
import type { Logger } from 'pino';
import type { Endpoint } from '../table/endpoint.js';
import { endpointKey } from '../table/endpoint.js';
import type { ClientIdentity } from '../trap/client-reports.js';
import { ClientReports } from '../trap/client-reports.js';
import { RateLimitedLog } from '../trap/limits.js';

/** One external connection as a gateway pushes it: from its relay socket `from` to the instance `to`, for `client`. */
export interface PushRecord {
  from: Endpoint;
  to: Endpoint;
  client: Endpoint;
}

/** The gateway's side: collects the records of one event-loop turn per destination node and sends them together. */
export class IngressPusher {
  private readonly batches = new Map<string, PushRecord[]>();
  private scheduled = false;
  /** Records pushed (sent to the peer API's connection). */
  pushed = 0;

  constructor(
    private readonly deps: {
      /** Whether ip is another member's node address (a push goes only there). */
      isRemoteMember: (ip: string) => boolean;
      /** Sends records to the daemon at ip (PeerApi.push). */
      send: (ip: string, records: PushRecord[]) => void;
    },
  ) {}

  /** The relay (or the Node forwarder) connected `from` to `to` for `client`. */
  add(from: Endpoint, client: Endpoint, to: Endpoint): void {
    if (!this.deps.isRemoteMember(to.ip)) return; /* an instance here (claimed locally), or not a member's: nothing to push */
    let b = this.batches.get(to.ip);
    if (!b) this.batches.set(to.ip, (b = []));
    b.push({ from, to, client });
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends what was collected (at the end of the turn). */
  flush(): void {
    this.scheduled = false;
    for (const [ip, records] of this.batches) {
      this.pushed += records.length;
      this.deps.send(ip, records);
    }
    this.batches.clear();
  }
}

/** Why a pushed record was not believed (the keys of PushedClients.refused). */
export type PushRefusal = 'not-a-gateway' | 'not-its-socket' | 'not-exposed' | 'table-busy';

/** How long an accept that asks the daemon waits for a push still on its way, from a gateway that pushes (ms). */
export const PUSH_WAIT_MS = 25;
/** How long an accept answered without the push (whoIs) keeps a late push for its connection out (ms). */
const LATE_MS = 5000;
const LATE_MAX = 4096;

export interface PushedClientsDeps {
  /** The live gateway member at this address, if any (the sender of a push must be one). */
  liveGateway: (ip: string) => boolean;
  /** Whether `to` is a TCP service endpoint of this node whose service is exposed now. */
  exposedHere: (to: Endpoint) => boolean;
  /** Writes the outside client's entry into the host's identity table (false: not written, the accept asks). */
  putEntry: (r: PushRecord) => boolean;
  /** Takes the table's entry for the connection from -> to (the daemon answered its accept itself). */
  takeEntry: (from: Endpoint, to: Endpoint) => void;
  log: Logger;
}

/** The instance's side: believes, records, and answers pushed outside clients. */
export class PushedClients {
  private readonly reports = new ClientReports(PUSH_WAIT_MS);
  /** Gateways that pushed to this node (their address -> last push): an accept of their connections waits for a push
   * still on its way before asking them. */
  private readonly pushers = new Map<string, number>();
  /** Connections whose accept was answered without the push (client endpoint key -> when): a late push is dropped. */
  private readonly late = new Map<string, number>();
  /** Records believed (written into the identity table and kept for the daemon's accept). */
  accepted = 0;
  /** Accepts of pushed clients: answered by the server's generator from the identity table; by this daemon (the
   * generator asked before the push was here); asked of the gateway after all (the push did not come in time); by the
   * generator from the relay's preamble (no push needed: native/preamble.h). */
  readonly answered = { generator: 0, daemon: 0, late: 0, preamble: 0 };
  /** Records not believed, by reason. */
  readonly refused: Record<PushRefusal, number> = { 'not-a-gateway': 0, 'not-its-socket': 0, 'not-exposed': 0, 'table-busy': 0 };
  private readonly limitLog: RateLimitedLog;

  constructor(private readonly deps: PushedClientsDeps) {
    this.limitLog = new RateLimitedLog(deps.log);
  }

  private refuse(why: PushRefusal, peer: string, r?: PushRecord): void {
    this.refused[why]++;
    this.limitLog.warn(
      `push-refused/${peer}/${why}`,
      { peer, why, from: r && endpointKey(r.from), to: r && endpointKey(r.to), refused: this.refused[why] },
      'pushed outside client not believed',
    );
  }

  /** Records pushed by the member at `peer` (already authenticated by the peer API). */
  receive(peer: string, records: PushRecord[]): void {
    if (!this.deps.liveGateway(peer)) {
      for (const r of records) this.refuse('not-a-gateway', peer, r);
      return;
    }
    const now = Date.now();
    this.pushers.set(peer, now);
    for (const r of records) {
      /* a gateway vouches for its own sockets only: the accepted socket's peer is the connection's source */
      if (r.from.ip !== peer) {
        this.refuse('not-its-socket', peer, r);
        continue;
      }
      if (!this.deps.exposedHere(r.to)) {
        this.refuse('not-exposed', peer, r);
        continue;
      }
      const key = endpointKey(r.from);
      const late = this.late.get(key);
      if (late !== undefined) {
        this.late.delete(key);
        if (now - late < LATE_MS) continue; /* its accept was answered already (whoIs): an entry would outlive it */
      }
      this.accepted++;
      this.reports.report(key, { identity: r.client.ip, port: r.client.port, appId: 'external', tags: {}, external: true }, r.to);
      if (!this.deps.putEntry(r)) this.refuse('table-busy', peer, r); /* kept for the daemon's accept all the same */
    }
  }

  /** An accept asks the daemon who `peer` (not of this node) is: a pushed outside client, waited for a moment when
   * that gateway pushes (undefined: ask it, whoIs). */
  async claim(peer: Endpoint, listener: Endpoint | undefined): Promise<ClientIdentity | undefined> {
    if (!this.pushers.has(peer.ip)) return undefined;
    const key = endpointKey(peer);
    const dst = listener ? endpointKey(listener) : undefined;
    const who = await this.reports.claim(key, PUSH_WAIT_MS, dst);
    if (who?.external) {
      this.answered.daemon++;
      if (listener) this.deps.takeEntry(peer, listener); /* answered here: the table's entry must not name a later one */
      return who;
    }
    this.answered.late++;
    this.markLate(key);
    return undefined;
  }

  /** The server's generator answered the accept of `peer` from the identity table (AS_CLAIMED): the record it used
   * and the instance endpoint, for the connection tracker (undefined: not a pushed one). */
  claimed(peer: Endpoint): { who: ClientIdentity; to: Endpoint | undefined } | undefined {
    if (!this.pushers.has(peer.ip)) return undefined;
    const r = this.reports.takeWithDst(endpointKey(peer));
    if (!r?.who.external) return undefined;
    this.answered.generator++;
    return { who: r.who, to: r.dst };
  }

  private markLate(key: string): void {
    if (this.late.size >= LATE_MAX) {
      const old = Date.now() - LATE_MS;
      for (const [k, at] of this.late) {
        if (at >= old && this.late.size < LATE_MAX) break;
        this.late.delete(k);
      }
    }
    this.late.set(key, Date.now());
  }

  /** Forgets records no accept may claim any more. */
  expire(now = Date.now()): void {
    this.reports.expire(now);
  }
}
