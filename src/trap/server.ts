/** The trap socket: accepts generators (one per program), decodes their messages, asks the handler, replies.
 * A malformed message is logged and dropped; a misbehaving generator loses its connection, never the daemon. */
import type { Logger } from 'pino';
import { readFileSync } from 'node:fs';
import { Errno } from '../errors.js';
import { type Accepted, native, type Poller } from '../native/binding.js';
import type { AppRecord } from './apps.js';
import { parseMeta } from './apps.js';
import { errCode, FdBudget, isFdExhaustion } from './fdbudget.js';
import { TrapHandler } from './handler.js';
import { decodeMsg, decodeRequest, encodeMsg, encodeSockaddr, MsgFlag, MsgType, type Reply, type RequestOf, type TrapMsg, type TrapRequest, type TrapStatsDelta } from './protocol.js';
import { decodeWaitStatus } from './wait-status.js';
import type { DecidedRecord } from './decided-wire.js';

/** Receives each generator's trap counters (AS_STATS deltas). */
export type TrapStatsSink = (app: AppRecord, delta: TrapStatsDelta) => void;

interface Conn {
  fd: number;
  pid: number;
  /** Who the generator runs for: its real uid when the admission said (the app's owner), else SO_PEERCRED's. */
  uid: number;
  poller: Poller;
  app?: AppRecord;
  /** Why this peer may not register an app (SO_PEERCRED check), if it may not. */
  refused?: string;
  /** Replies that did not fit in the socket buffer, sent when it drains. */
  backlog: Outgoing[];
}

/** A connecting generator as the admission check sees it: SO_PEERCRED, and when it was accepted (clock ticks since
 * boot, /proc/uptime), so a process that started after that is known not to be the peer (its pid was reused). */
export interface TrapPeer {
  pid: number;
  uid: number;
  gid: number;
  acceptedAt: number;
}

function uptimeTicks(): number {
  return Math.ceil(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 100);
}

/** Message types a program's trapped call waits on (the rest are reports). */
const TRAPPED = new Set<number>([MsgType.BIND, MsgType.LISTEN, MsgType.CONNECT, MsgType.ACCEPT, MsgType.UDP_WHO]);

interface Outgoing {
  buf: Buffer;
  fds: number[];
}

/** How long the trap socket's listener rests after an accept failed with no spare descriptor to refuse with (ms). */
const ACCEPT_RETRY_MS = 250;

export class TrapServer {
  private listenFd = -1;
  private listenPoller?: Poller;
  private acceptRetry?: NodeJS.Timeout;
  private readonly conns = new Map<number, Conn>();
  /** The connection of each registered app, to push it AS_OFFER messages. */
  private readonly byApp = new Map<string, Conn>();
  messages = 0;
  badMessages = 0;
  /** Messages that answer a trapped call (bind, listen, connect/sendto, accept): the daemon's trap rate. */
  traps = 0;
  /** Told of every unexpected exception caught here (besides the log line): the daemon counts them. */
  onInternalError?: (what: string, err: unknown) => void;
  /** Descriptors a HELLO reply hands the generator (the decision table and the shared counters, native/dtab.h);
   * they are closed once sent. */
  helloFds?: () => number[];
  /** A service of this node is up (a listen): the decision table is published before the listen is answered. */
  onServiceUp?: () => void;
  /** An app registered or went away (the decision table is republished). */
  onAppsChanged?: () => void;
  /** Connects a generator decided by itself (AS_DECIDED, decided.ts). */
  onDecided?: (app: AppRecord, records: DecidedRecord[]) => void;
  /** Fast-path connections a server's generator took straight from a client's generator (AS_CLAIMED). */
  onClaimed?: (app: AppRecord, claims: RequestOf<'claimed'>) => void;

  constructor(
    private readonly handler: TrapHandler,
    private readonly log: Logger,
    private readonly statsSink?: TrapStatsSink,
    /** Checks a connecting generator's peer credentials: a string is why not (sent to it); undefined or { uid } =
     * admitted, with uid (when given) the user the generator runs for — its real uid, which owns the app — in place
     * of SO_PEERCRED's effective uid. */
    private readonly admit?: (peer: TrapPeer) => string | { uid: number } | undefined,
    /** The daemon's descriptors (shared with whatever else in the daemon needs them). */
    readonly fds: FdBudget = new FdBudget(log),
  ) {
    fds.onRecover(() => this.resumeAccept());
  }

  /** Starts listening at path (mode 0660: owner and group may run apps). */
  listen(path: string): void {
    this.listenFd = native.seqpacketListen(path, 0o660);
    this.listenPoller = native.poller(this.listenFd, () => this.guard('accepting generators', () => this.acceptAll()));
    this.listenPoller.start(1);
  }

  /** Stops serving. With `detach`, the apps stay registered (a restart: their generators come back to the next
   * daemon with their tickets); without, every app ends. */
  close(detach = false): void {
    if (this.acceptRetry) clearTimeout(this.acceptRetry);
    this.acceptRetry = undefined;
    this.listenPoller?.stop();
    if (this.listenFd >= 0) native.close(this.listenFd);
    this.listenFd = -1;
    for (const c of [...this.conns.values()]) {
      if (detach) c.app = undefined;
      this.drop(c);
    }
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Accepts every generator waiting on the trap socket. Out of descriptors, each one is refused at once (the spare
   * descriptor makes room for its accept and the refusal, and is taken back after), so a program fails with a clear
   * message instead of waiting for its HELLO to time out. With no spare to refuse with, the listener rests
   * (ACCEPT_RETRY_MS): its poller is level-triggered and would call back at once, for ever, while the generators
   * wait in the backlog; it resumes when descriptors are back. */
  private acceptAll(): void {
    if (this.listenFd < 0 || this.acceptRetry) return;
    for (;;) {
      const a = this.tryAccept();
      if (a === null) return;
      if (typeof a !== 'string') {
        this.open(a);
        continue;
      }
      if (!isFdExhaustion(a)) {
        this.pauseAccept();
        return;
      }
      this.fds.fail('accepting a program on the trap socket', a);
      if (!this.fds.releaseSpare()) {
        this.pauseAccept();
        return;
      }
      const b = this.tryAccept();
      if (typeof b === 'string') { /* still no room, even with the spare closed (another thread took it) */
        this.fds.restoreSpare();
        this.pauseAccept();
        return;
      }
      if (b === null) { /* the one waiting has gone meanwhile */
        this.fds.restoreSpare();
        return;
      }
      if (this.fds.restoreSpare()) this.open(b); /* room for the spare again after all: serve it */
      else {
        this.refuseExhausted(b, a);
        this.fds.restoreSpare();
      }
    }
  }

  /** One accept on the trap socket: the generator, null when none is waiting, or the errno code it failed with. */
  private tryAccept(): Accepted | null | string {
    try {
      return native.accept(this.listenFd);
    } catch (e) {
      const code = errCode(e) ?? 'EUNKNOWN';
      if (!isFdExhaustion(code)) this.log.error({ err: e }, 'trap socket accept failed');
      return code;
    }
  }

  /** Stops polling the listener for a while (see acceptAll). */
  private pauseAccept(): void {
    if (this.acceptRetry || this.listenFd < 0) return;
    this.listenPoller?.stop();
    this.acceptRetry = setTimeout(() => this.resumeAccept(), ACCEPT_RETRY_MS);
    this.acceptRetry.unref();
  }

  private resumeAccept(): void {
    if (!this.acceptRetry) return;
    clearTimeout(this.acceptRetry);
    this.acceptRetry = undefined;
    if (this.listenFd < 0) return;
    this.listenPoller?.start(1);
    this.acceptAll();
  }

  /** A generator accepted with the spare descriptor while there is no other: its HELLO is answered with the errno
   * (EMFILE, or ENFILE when the whole system is out) and a message the launcher prints, and it is closed. A
   * generator coming back after a daemon restart takes this as any refusal and tries again later. */
  private refuseExhausted(a: Accepted, code: string): void {
    const errno = code === 'ENFILE' ? Errno.ENFILE : Errno.EMFILE;
    const text = `ERR_RESOURCES: the appswitch daemon is out of file descriptors (${code}); try again once it has recovered (see its log)`;
    try {
      native.send(a.fd, encodeMsg({ type: MsgType.HELLO, result: -errno, payload: Buffer.from(text) }));
      native.recv(a.fd); /* its HELLO, if already there: closing with it unread would reset the connection */
    } catch {
      /* it is gone: nothing to tell */
    }
    native.close(a.fd);
  }

  private open(a: Accepted): void {
    const conn: Conn = { fd: a.fd, pid: a.pid, uid: a.uid, backlog: [], poller: undefined as unknown as Poller };
    const verdict = this.admit?.({ pid: a.pid, uid: a.uid, gid: a.gid, acceptedAt: uptimeTicks() });
    if (typeof verdict === 'string') conn.refused = verdict;
    else if (verdict !== undefined) conn.uid = verdict.uid;
    conn.poller = native.poller(a.fd, (status, events) => this.guard('serving a generator', () => this.onReady(conn, status, events), conn.pid));
    conn.poller.start(1);
    this.conns.set(a.fd, conn);
  }

  private onReady(c: Conn, status: number, events: number): void {
    if (status < 0) {
      this.drop(c);
      return;
    }
    if (events & 2) this.flush(c);
    if (!(events & 1)) return;
    for (let i = 0; i < 64; i++) {
      let r;
      try {
        r = native.recv(c.fd);
      } catch (e) {
        if ((e as { code?: string }).code === 'EMSGSIZE') {
          /* longer than any message of the protocol: dropped, the program's connection stays */
          this.badMessages++;
          this.log.warn({ pid: c.pid }, 'oversized trap message dropped');
          continue;
        }
        this.log.warn({ err: e, pid: c.pid }, 'trap connection error');
        this.drop(c);
        return;
      }
      if (!r) return;
      if (r.data.length === 0) {
        for (const fd of r.fds) native.close(fd);
        this.drop(c);
        return;
      }
      try {
        this.onMessage(c, r.data, r.fds, r.fdsLost);
      } catch (e) { /* a handler that throws costs that message, never the daemon (nor the program's connection) */
        this.badMessages++;
        this.log.error({ err: e, pid: c.pid, app: c.app?.id }, 'trap message handling failed; message dropped');
        this.onInternalError?.('handling a trap message', e);
      }
      if (!this.conns.has(c.fd)) return;
    }
  }

  /** Handles one message; fds that arrived with it are passed on (fast-path CONNECTED) or closed here. `fdsLost`:
   * descriptors came with it but the daemon had no room for them (see FdBudget). A registered app's message is
   * decoded here, once, into its request (protocol.ts: decodeRequest). */
  private onMessage(c: Conn, data: Buffer, fds: number[] = [], fdsLost = false): void {
    if (c.refused !== undefined) {
      this.refuse(c, data, fds);
      return;
    }
    const m = decodeMsg(data);
    const req = m !== undefined && c.app !== undefined ? decodeRequest(m) : undefined;
    const offered = m !== undefined && c.app !== undefined && m.type === MsgType.CONNECT && (m.flags & MsgFlag.OFFER) !== 0;
    const fast = m !== undefined && c.app !== undefined && ((m.type === MsgType.CONNECTED && (m.flags & MsgFlag.FASTPATH) !== 0) || offered);
    if (fds.length && !(m && c.app && (m.type === MsgType.CONNECTED || offered))) {
      for (const fd of fds) native.close(fd);
      fds = [];
    }
    if (fdsLost) {
      this.fds.fail("receiving a fast-path connection's descriptors (SCM_RIGHTS)", 'MSG_CTRUNC');
      if (fast && !offered && c.app && req) {
        this.messages++;
        if (req.kind === 'connected') this.handler.connectedLost(c.app, req);
        return;
      }
    }
    if (fast && m && fds.length === 2 && m.flags & MsgFlag.SENTINEL) {
      /* the byte the client's generator put in front of the stream (see fastpath.h): the server must not see it */
      try {
        native.drain(fds[0] as number, 1);
      } catch (e) {
        this.log.debug({ err: e, pid: c.pid }, 'fast-path sentinel not read');
      }
    }
    this.onDecoded(c, data, m, req, fds);
  }

  private onDecoded(c: Conn, data: Buffer, m: TrapMsg | undefined, req: TrapRequest | undefined, fds: number[]): void {
    this.messages++;
    if (!m) {
      this.badMessages++;
      this.log.warn({ pid: c.pid, bytes: data.length }, 'malformed trap message dropped');
      return;
    }
    if (TRAPPED.has(m.type)) this.traps++;
    if (!c.app || !req) {
      if (m.type !== MsgType.HELLO) {
        this.badMessages++;
        this.log.warn({ pid: c.pid, type: m.type }, 'trap message before HELLO: connection dropped');
        this.drop(c);
        return;
      }
      this.hello(c, m);
      return;
    }
    const app = c.app;
    let reply: Reply | undefined;
    try {
      switch (req.kind) {
        case 'undecodable': /* its address is no inet sockaddr: the call fails as it always has, a report is dropped */
          for (const fd of fds) native.close(fd);
          if (req.errno !== undefined) reply = { result: -req.errno };
          break;
        case 'bind':
          reply = this.handler.bind(app, req);
          break;
        case 'bound':
          this.handler.bound(app, req);
          break;
        case 'unbound':
          this.handler.unbound(app, req);
          break;
        case 'listen':
          reply = this.handler.listen(app, req);
          if (reply.result >= 0) this.onServiceUp?.(); /* before the answer: see DecisionTable.flush */
          break;
        case 'connect':
          reply = this.handler.connect(app, req, fds);
          if (reply.push) this.push(reply.push);
          break;
        case 'claimed':
          this.handler.claimed(app, req);
          this.onClaimed?.(app, req);
          break;
        case 'decided':
          if (req.bad) {
            this.badMessages++;
            this.log.warn({ app: app.id, bytes: req.bytes }, 'malformed decided-connect records dropped');
          }
          this.onDecided?.(app, req.records);
          break;
        case 'connected':
          if (req.decided) { /* decided by the generator from the decision table: counted here */
            this.handler.stats.connects++;
            this.handler.stats.retried += req.retried;
          }
          this.handler.connected(app, req, fds);
          break;
        case 'accept':
          this.handler
            .accept(app, req)
            .then(
              (r) => this.conns.has(c.fd) && this.reply(c, m, r),
              (e: unknown) => {
                this.log.error({ err: e, app: app.id }, 'accept handling failed');
                this.onInternalError?.('deciding an accept', e);
                if (this.conns.has(c.fd)) this.reply(c, m, { result: -111 });
              },
            )
            .catch((e: unknown) => {
              this.log.error({ err: e, app: app.id }, 'accept reply failed');
              this.onInternalError?.('answering an accept', e);
            });
          break;
        case 'udpFrom':
          this.handler.udpFrom(app, req);
          break;
        case 'udpWho':
          this.handler
            .udpWho(app, req)
            .then(
              (r) => this.conns.has(c.fd) && this.reply(c, m, r),
              (e: unknown) => {
                this.log.error({ err: e, app: app.id }, 'datagram sender look-up failed');
                if (this.conns.has(c.fd)) this.reply(c, m, { result: -2 });
              },
            )
            .catch((e: unknown) => this.log.error({ err: e, app: app.id }, 'datagram sender reply failed'));
          break;
        case 'started':
          app.pid = req.pid;
          break;
        case 'stats':
          if (!req.delta) {
            this.badMessages++;
            this.log.warn({ app: app.id, bytes: req.bytes }, 'malformed trap statistics dropped');
          } else {
            this.statsSink?.(app, req.delta);
          }
          break;
        case 'exit':
          this.log.info({ app: app.id, pid: req.pid, ...decodeWaitStatus(req.status) }, 'program exited');
          break;
        case 'hello': /* a second HELLO is no message an app sends */
        case 'unknown':
          this.badMessages++;
          this.log.warn({ app: app.id, type: m.type }, 'unknown trap message type');
          reply = { result: -22 };
          break;
        default:
          req satisfies never;
      }
    } catch (e) {
      this.log.error({ err: e, app: app.id, type: m.type }, 'trap handler failed; answering EINVAL');
      reply = { result: -22 };
    }
    if (reply) this.reply(c, m, reply);
  }

  /** A peer that may not register (not a generator, or not allowed to): nothing it sends is looked at beyond the
   * message type, so a HELLO gets the reason (the launcher prints it and exits 125); then it is dropped. */
  private refuse(c: Conn, data: Buffer, fds: number[]): void {
    for (const fd of fds) native.close(fd);
    const m = decodeMsg(data);
    if (m?.type === MsgType.HELLO) this.reply(c, m, { result: -Errno.EPERM, payload: Buffer.from(`ERR_PERMISSION: ${c.refused ?? ''}`) });
    this.drop(c);
  }

  private hello(c: Conn, m: TrapMsg): void {
    const meta = parseMeta(m.payload);
    let res: AppRecord | string;
    try {
      res = typeof meta === 'string' ? meta : this.handler.hello(meta, c.pid, c.uid);
    } catch (e) { /* the program is refused with a message (the launcher prints it and exits 125); the daemon goes on */
      this.log.error({ err: e, pid: c.pid }, 'app registration failed');
      res = `ERR_INTERNAL: the appswitch daemon could not register the program (${(e as Error).message}); see its log`;
    }
    if (typeof res === 'string') {
      this.log.warn({ pid: c.pid, uid: c.uid, error: res }, 'app refused');
      this.reply(c, m, { result: res.startsWith('EADDRINUSE:') ? -Errno.EADDRINUSE : -Errno.EINVAL, payload: Buffer.from(res) });
      return;
    }
    c.app = res;
    if (typeof meta !== 'string' && meta.offers !== undefined) res.offers = meta.offers; /* a resumed app's too */
    this.byApp.set(res.id, c);
    const ticket = Buffer.from(TrapHandler.ticketOf(res));
    let fds: number[] = [];
    try {
      fds = this.helloFds?.() ?? [];
    } catch (e) { /* no table for this generator: it asks the daemon for every connect, as before */
      this.log.warn({ err: e, app: res.id }, 'decision table not handed to the generator');
    }
    this.reply(c, m, { result: 0, arg: 0, addr: encodeSockaddr({ ip: res.identity, port: 0 }), payload: ticket, fds });
    this.onAppsChanged?.();
  }

  /** Sends an AS_OFFER to the generator of app `p.appId` (before the reply that lets the client connect, so it is
   * queued on the server's side first). Tells the handler whether the fd went out (then it is ours to close). */
  private push(p: NonNullable<Reply['push']>): void {
    const c = this.byApp.get(p.appId);
    if (!c) {
      p.sent(false);
      return;
    }
    const out: Outgoing = { buf: encodeMsg({ type: MsgType.OFFER, seq: 0, result: 0, flags: MsgFlag.FASTPATH, addr: p.addr, addr2: p.addr2 }), fds: [p.fd] };
    if (c.backlog.length) {
      c.backlog.push(out);
      p.sent(true);
      return;
    }
    const r = this.trySend(c, out);
    if (r !== true && r !== false) this.log.warn({ err: r.err, app: p.appId }, 'fast-path offer could not be pushed; the accept will claim it');
    p.sent(r === true || r === false); /* sent or queued: the fd is the connection's now */
  }

  private reply(c: Conn, m: TrapMsg, r: Reply): void {
    const msg: Parameters<typeof encodeMsg>[0] = { type: m.type, seq: m.seq, result: r.result, arg: r.arg ?? 0, flags: r.flags ?? 0 };
    if (r.addr) msg.addr = r.addr;
    if (r.addr2) msg.addr2 = r.addr2;
    if (r.payload) msg.payload = r.payload;
    const out: Outgoing = { buf: encodeMsg(msg), fds: r.fds ?? [] };
    if (c.backlog.length) {
      c.backlog.push(out);
      return;
    }
    this.sendOrQueue(c, out);
  }

  /** Sends one reply (its fds, if any, are ours to close once sent or given up). */
  private sendOrQueue(c: Conn, out: Outgoing): boolean {
    const r = this.trySend(c, out);
    if (r === true || r === false) return r;
    this.log.warn({ err: r.err, pid: c.pid }, 'trap reply failed; dropping connection');
    for (const fd of out.fds) native.close(fd);
    this.drop(c);
    return false;
  }

  /** Sends one message now (true; its fds, ours, are closed), or queues it when the socket is full (false; sent when
   * it drains). Anything else is returned, and the fds are still the caller's. */
  private trySend(c: Conn, out: Outgoing): boolean | { err: unknown } {
    try {
      native.send(c.fd, out.buf, out.fds.length ? out.fds : undefined);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EAGAIN') return { err: e };
      c.backlog.push(out);
      c.poller.start(3);
      return false;
    }
    for (const fd of out.fds) native.close(fd);
    return true;
  }

  private flush(c: Conn): void {
    const q = c.backlog.splice(0);
    for (let i = 0; i < q.length; i++) {
      if (!this.sendOrQueue(c, q[i] as Outgoing)) {
        c.backlog.push(...q.slice(i + 1));
        return;
      }
    }
    c.poller.start(1);
  }

  /** Runs a poller callback: whatever it throws is logged, and the daemon keeps serving (a throw out of a native
   * callback would end the process). */
  private guard(what: string, fn: () => void, pid?: number): void {
    try {
      fn();
    } catch (e) {
      this.log.error({ err: e, pid }, `trap server: ${what} failed`);
      this.onInternalError?.(what, e);
    }
  }

  private drop(c: Conn): void {
    if (!this.conns.delete(c.fd)) return;
    if (c.app && this.byApp.get(c.app.id) === c) this.byApp.delete(c.app.id);
    for (const out of c.backlog.splice(0)) for (const fd of out.fds) native.close(fd);
    c.poller.stop();
    native.close(c.fd);
    if (c.app) {
      this.handler.goodbye(c.app);
      this.onAppsChanged?.();
    }
  }
}
