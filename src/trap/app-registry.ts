/** The app registry: the apps of this node — registration from a generator's HELLO (identity, vip or name, held
 * against other users), resumption after a daemon restart by ticket, the restored apps waiting for their generator,
 * and the end of an app's record. Performs no I/O (the cluster's directory is injected). */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { IdentityPool, rangeEdge, type VirtualRanges } from '../table/addresses.js';
import type { AppDirectory, AppEntry } from '../table/directory.js';
import { canonicalIp } from '../table/endpoint.js';
import { type AppMeta, type AppRecord, TICKET_RE } from './apps.js';

export interface AppRegistryDeps {
  nodeName: string;
  ranges: VirtualRanges;
  log: Logger;
  /** Every app in the cluster: names, vips and identities stay unique through it. */
  directory?: AppDirectory;
  /** See HandlerConfig.onChange. */
  onChange?: (now?: boolean) => void;
  /** Why these `--expose` host ports cannot be (a pool or daemon port of this node), else undefined. */
  exposeProblem?: (specs: NonNullable<AppMeta['expose']>) => string | undefined;
  /** A uid besides root that may `--expose`: a private daemon's own user (its gateway is on loopback, its ports its
   * user's; docs/private-daemon.md). */
  adminUid?: number;
}

export class AppRegistry {
  readonly apps = new Map<string, AppRecord>();
  private readonly identities: IdentityPool;
  /** Apps restored from a saved state whose generator has not come back yet: id -> deadline (ms). */
  private readonly detached = new Map<string, number>();

  constructor(private readonly deps: AppRegistryDeps) {
    let seed = 0;
    for (const ch of deps.nodeName) seed = (seed * 31 + ch.charCodeAt(0)) >>> 0;
    this.identities = new IdentityPool(seed, (ip) => deps.directory?.takenByOther(ip) ?? false);
  }

  private changed(): void {
    this.deps.onChange?.(false);
  }

  /** Registers an app from its HELLO. Returns the record, or an error text for the user. */
  hello(meta: AppMeta, launcherPid: number, uid: number): AppRecord | string {
    const { ranges, directory, nodeName, log } = this.deps;
    if (meta.resume !== undefined) {
      const back = this.resume(meta.resume, launcherPid, uid);
      if (back) return back;
    }
    let identity: string;
    if (meta.ip !== undefined) {
      let ip: string;
      try {
        ip = canonicalIp(meta.ip);
      } catch {
        return `--ip ${meta.ip} is not an IP address`;
      }
      if (!ranges.isVip(ip)) {
        return `--ip ${ip} is outside the virtual ranges (${ranges.cidrs.join(', ')}); see appswitch daemon --vip-cidr`;
      }
      const edge = rangeEdge(ranges.cidrs, ip);
      if (edge) return `--ip ${ip} is the ${edge.kind} address of the virtual range ${edge.cidr}: not an app's address`;
      const holder = directory?.reservedBy(ip);
      if (holder !== undefined) return `--ip ${ip} is the vip of ${holder}: not an app's address`;
      meta.ip = ip;
      identity = ip;
    } else if (meta.name !== undefined) {
      try {
        identity = directory?.vipForName(meta.name, ranges.cidrs[0] as string) ?? this.identities.allocate();
      } catch (e) {
        return `no vip for --name ${meta.name}: ${(e as Error).message}`;
      }
      meta.ip = identity; /* a named app gets a vip, stable for its lifetime and unique in the cluster */
    } else if (meta.resume !== undefined && meta.identity !== undefined && this.identities.reserve(meta.identity)) {
      identity = meta.identity; /* a program that outlived the daemon's state keeps the identity it has been using */
    } else {
      identity = this.identities.allocate();
    }
    const { resume: _resume, identity: _hint, owner: claimed, ...plain } = meta;
    /* uid is the generator's real uid: a member's setuid launcher (effective uid 0) claims no other owner */
    const owner = uid === 0 && claimed !== undefined ? claimed : uid;
    if (uid !== 0 && uid !== this.deps.adminUid && meta.expose?.length) {
      return `ERR_PERMISSION: --expose needs root (uid ${uid} may run programs, not open ports on the gateways; appswitch expose needs root too)`;
    }
    const held = this.heldByOther(owner, meta.ip, meta.name);
    if (held) return held;
    const badExpose = meta.expose ? this.deps.exposeProblem?.(meta.expose) : undefined;
    if (badExpose) return `--expose: ${badExpose}`;
    const app: AppRecord = {
      ...plain,
      id: randomBytes(4).toString('hex'),
      identity,
      launcherPid,
      uid,
      owner,
      startedAt: Date.now(),
      secret: randomBytes(16).toString('hex'),
    };
    this.apps.set(app.id, app);
    const entry: AppEntry = { id: app.id, node: nodeName, identity, vip: meta.ip !== undefined, tags: app.tags };
    if (app.name !== undefined) entry.name = app.name;
    if (app.expose?.length) Object.assign(entry, { expose: app.expose, exposedAt: app.startedAt });
    try {
      directory?.put(entry);
    } catch (e) { /* not registered after all: nothing of it stays behind (the trap server refuses the program) */
      this.apps.delete(app.id);
      if (!app.ip) this.identities.release(identity);
      throw e;
    }
    log.info({ app: app.id, ip: app.ip, identity, name: app.name, tags: app.tags, cmd: app.cmd }, 'app started');
    this.changed();
    return app;
  }

  /** An EADDRINUSE text when a running app of this node owned by another user holds this vip or name (instances of
   * one distributed app run by one user share them), else undefined. */
  private heldByOther(owner: number, ip: string | undefined, name: string | undefined): string | undefined {
    for (const a of this.apps.values()) {
      const o = a.owner ?? a.uid;
      if (o === owner) continue;
      if (ip !== undefined && a.ip === ip) return `EADDRINUSE: --ip ${ip} is held by app ${a.id} of another user (uid ${o}); only that user may run more instances of it`;
      if (name !== undefined && a.name === name) return `EADDRINUSE: --name ${name} is held by app ${a.id} of another user (uid ${o}); only that user may run more instances of it`;
    }
    return undefined;
  }

  /** The ticket a generator presents after a daemon restart gives it its app back (same id, identity, services),
   * if that app was restored and is waiting, the secret matches and the same user asks. */
  private resume(ticket: string, launcherPid: number, uid: number): AppRecord | undefined {
    const m = TICKET_RE.exec(ticket);
    const app = m ? this.apps.get(m[1] as string) : undefined;
    if (!m || !app || !this.detached.has(app.id)) return undefined;
    const a = Buffer.from(app.secret, 'hex');
    const b = Buffer.from(m[2] as string, 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b) || app.uid !== uid) {
      this.deps.log.warn({ app: app.id, pid: launcherPid, uid }, 'resume refused: wrong ticket or user');
      return undefined;
    }
    this.detached.delete(app.id);
    app.launcherPid = launcherPid;
    this.deps.log.info({ app: app.id, identity: app.identity, name: app.name, pid: launcherPid }, 'app resumed after a daemon restart');
    this.changed();
    return app;
  }

  /** The ticket the generator keeps for a resumed session. */
  static ticketOf(app: AppRecord): string {
    return `${app.id}.${app.secret}`;
  }

  /** Takes over saved apps: each waits for its generator until `deadline` (see expired). */
  restore(apps: AppRecord[], deadline: number, attempt: (what: string, id: string, fn: () => void) => void): void {
    for (const app of apps) {
      attempt('app', app.id, () => {
        if (this.apps.has(app.id)) return;
        if (!app.ip && !this.identities.reserve(app.identity)) {
          this.deps.log.warn({ app: app.id, identity: app.identity }, 'restored app lost its identity (taken): dropped');
          return;
        }
        this.apps.set(app.id, app);
        this.detached.set(app.id, deadline);
        const entry: AppEntry = { id: app.id, node: this.deps.nodeName, identity: app.identity, vip: app.ip !== undefined, tags: app.tags };
        if (app.name !== undefined) entry.name = app.name;
    if (app.expose?.length) Object.assign(entry, { expose: app.expose, exposedAt: app.startedAt });
        this.deps.directory?.put(entry);
      });
    }
  }

  /** Restored apps whose generator did not come back by their deadline (their program ended meanwhile), one at a
   * time: each is logged, then handed to the caller to end before the next is looked at. */
  *expired(now: number): Generator<AppRecord> {
    for (const [id, deadline] of this.detached) {
      if (now < deadline) continue;
      const app = this.apps.get(id);
      this.detached.delete(id);
      if (app) {
        this.deps.log.info({ app: id, identity: app.identity }, 'restored app did not come back: removed');
        yield app;
      }
    }
  }

  /** Restored apps still waiting for their generator. */
  get detachedApps(): number {
    return this.detached.size;
  }

  /** Whether `app` is this registry's current record (not ended, nor replaced). */
  isCurrent(app: AppRecord): boolean {
    return this.apps.get(app.id) === app;
  }

  /** The app ended: it is no longer registered (its identity and directory entry go with release()). */
  remove(app: AppRecord): void {
    this.apps.delete(app.id);
    this.detached.delete(app.id);
  }

  /** Gives back an ended app's identity and directory entry: the last step of its end. */
  release(app: AppRecord): void {
    if (!app.ip) this.identities.release(app.identity);
    this.deps.directory?.remove(app.id);
    this.deps.log.info({ app: app.id, pid: app.pid }, 'app ended');
    this.changed();
  }
}
