/** The per-host daemon: the single place where the pieces are wired together (trap server + handler, service
 * table, port pool, control API, sweeper). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { DnsServer, renderResolvConf } from '../dns/index.js';
import pino, { type Logger } from 'pino';
import { defaultPolicy } from '../policy/policy.js';
import { VirtualRanges } from '../table/addresses.js';
import { AppDirectory } from '../table/directory.js';
import { PortPool } from '../table/port-pool.js';
import { ServiceTable } from '../table/service-table.js';
import { native } from '../native/binding.js';
import { TrapHandler } from '../trap/handler.js';
import { TrapServer } from '../trap/server.js';
import type { DaemonConfig } from './config.js';
import type { AppView, ControlRequest, InfoResult, ServiceView, StatusResult } from './control-protocol.js';
import { Cluster, readKeyring } from './cluster.js';
import { ControlServer } from './control.js';
import { PeerApi } from './peers.js';
import { tcpSnapshot } from './listeners.js';
import { VERSION } from './version.js';

export class Daemon {
  readonly log: Logger;
  readonly table = new ServiceTable();
  readonly directory = new AppDirectory();
  dns?: DnsServer;
  readonly handler: TrapHandler;
  private readonly trap: TrapServer;
  private readonly control: ControlServer;
  private sweepTimer?: NodeJS.Timeout;
  cluster?: Cluster;
  peers?: PeerApi;
  private readonly started = Date.now();

  constructor(
    readonly cfg: DaemonConfig,
    log?: Logger,
  ) {
    this.log = log ?? pino({ level: cfg.logLevel, base: { node: cfg.nodeName } });
    this.handler = new TrapHandler({
      nodeName: cfg.nodeName,
      nodeAddress: cfg.nodeAddress,
      ranges: new VirtualRanges(cfg.vipCidrs),
      table: this.table,
      pool: new PortPool(cfg.ports.low, cfg.ports.high),
      log: this.log,
      policy: defaultPolicy(),
      lb: cfg.lb,
      nodeAlive: (node) => node === cfg.nodeName || this.cluster?.ml.member(node)?.state === 'alive',
      directory: this.directory,
      fastpath: cfg.fastpath,
      closeFds: (fds) => {
        for (const fd of fds) native.close(fd);
      },
      resolvePeer: (ip, endpoint) => (this.isMemberAddress(ip) ? (this.peers?.whoIs(ip, endpoint) ?? Promise.resolve(undefined)) : Promise.resolve(undefined)),
    });
    this.trap = new TrapServer(this.handler, this.log);
    this.control = new ControlServer((req) => this.onControl(req), this.log);
  }

  async start(): Promise<void> {
    mkdirSync(this.cfg.stateDir, { recursive: true, mode: 0o755 });
    const opts: Parameters<typeof Cluster.start>[0] = {
      nodeName: this.cfg.nodeName,
      nodeAddress: this.cfg.nodeAddress,
      gossipPort: this.cfg.gossipPort,
      joins: this.cfg.joins,
      profile: this.cfg.gossipProfile,
      table: this.table,
      directory: this.directory,
      log: this.log.child({ module: 'gossip' }),
    };
    if (this.cfg.gossipKeyFile) opts.keys = readKeyring(this.cfg.gossipKeyFile);
    this.cluster = await Cluster.start(opts);
    this.peers = new PeerApi(this.cfg.peerPort, opts.keys ?? [], (ep) => this.handler.whoIsLocal(ep, 500), this.log.child({ module: 'peers' }));
    await this.peers.listen(this.cfg.nodeAddress);
    await this.startDns();
    this.trap.listen(this.cfg.trapSocket);
    await this.control.listen(this.cfg.controlSocket);
    this.sweepTimer = setInterval(() => void this.sweep(), this.cfg.sweepIntervalMs);
    this.sweepTimer.unref();
    this.log.info(
      {
        version: VERSION,
        nodeAddress: this.cfg.nodeAddress,
        controlSocket: this.cfg.controlSocket,
        vipCidrs: this.cfg.vipCidrs,
        gossip: this.cluster?.address,
        profile: this.cfg.gossipProfile,
        joins: this.cfg.joins,
      },
      'daemon started',
    );
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.trap.close();
    await this.cluster?.stop();
    await this.peers?.close();
    await this.dns?.close();
    await this.control.close();
    this.log.info('daemon stopped');
  }

  /** The built-in DNS server on the node address, and the resolv.conf that programs see (mounted over theirs). */
  private async startDns(): Promise<void> {
    const dir = this.directory;
    const self = `${this.cfg.nodeAddress}:${this.cfg.dnsPort}`;
    const forwarders = this.cfg.dnsServers.filter((f) => f !== this.cfg.nodeAddress && f !== self);
    this.dns = new DnsServer({
      source: {
        lookup: (name) => {
          const a = dir.vipsOf(name);
          return a.length ? { a, aaaa: [] } : undefined;
        },
        reverse: (ip) => dir.nameOf(ip),
      },
      forwarders,
      domain: this.cfg.dnsDomain,
      bindAddress: this.cfg.nodeAddress,
      port: this.cfg.dnsPort,
      logger: this.log.child({ module: 'dns' }),
    });
    await this.dns.start();
    writeFileSync(this.cfg.resolvConf, renderResolvConf(this.cfg.nodeAddress, this.cfg.dnsDomain), { mode: 0o644 });
  }

  /** Whether ip is the address of a cluster member (only members are asked who their clients are). */
  private isMemberAddress(ip: string): boolean {
    return (this.cluster?.members() ?? []).some((m) => m.state !== 'left' && m.address.replace(/^\[?(.*?)\]?:\d+$/, '$1') === ip);
  }

  private async sweep(): Promise<void> {
    try {
      const at = Date.now();
      const snap = await tcpSnapshot();
      this.handler.sweep(snap.listening, at, snap.sockets);
      this.handler.balancer.setInflight(snap.outbound);
    } catch (e) {
      this.log.warn({ err: e }, 'sweep failed');
    }
  }

  info(): InfoResult {
    return {
      version: VERSION,
      node: this.cfg.nodeName,
      nodeAddress: this.cfg.nodeAddress,
      trapSocket: this.cfg.trapSocket,
      vipCidrs: this.cfg.vipCidrs,
      ports: `${this.cfg.ports.low}-${this.cfg.ports.high}`,
      resolvConf: this.cfg.resolvConf,
      dnsDomain: this.cfg.dnsDomain,
    };
  }

  private onControl(req: ControlRequest): unknown {
    switch (req.method) {
      case 'info':
        return this.info();
      case 'status': {
        const s: StatusResult = {
          ...this.info(),
          uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
          apps: this.handler.apps.size,
          services: this.table.size,
          trapMessages: this.trap.messages,
          refused: this.handler.stats.refused,
          denied: this.handler.stats.denied,
          retried: this.handler.stats.retried,
          unidentified: this.handler.stats.unidentified,
          connections: { tcp: this.handler.stats.tcpConnections, fastpath: this.handler.stats.fastpathConnections },
          fastpath: this.cfg.fastpath,
          members: this.cluster?.members().filter((m) => m.state === 'alive').length ?? 1,
        };
        return s;
      }
      case 'apps':
        return [...this.handler.apps.values()].map((a): AppView => {
          const v: AppView = {
            id: a.id,
            identity: a.identity,
            tags: a.tags,
            cmd: a.cmd,
            startedAt: new Date(a.startedAt).toISOString(),
            services: this.table
              .all()
              .filter((e) => e.appId === a.id)
              .map((e) => `${e.vip}:${e.port}/${e.proto}`),
          };
          if (a.pid !== undefined) v.pid = a.pid;
          if (a.ip !== undefined) v.ip = a.ip;
          if (a.name !== undefined) v.name = a.name;
          return v;
        });
      case 'members':
        return this.cluster?.members() ?? [];
      case 'services':
        return this.table.all().map((e): ServiceView => {
          const v: ServiceView = {
            vip: e.vip,
            port: e.port,
            proto: e.proto,
            endpoint: `${e.endpoint.ip}:${e.endpoint.port}`,
            node: e.node,
            app: e.appId,
            tags: e.tags,
          };
          if (e.name !== undefined) v.name = e.name;
          return v;
        });
      default:
        return undefined;
    }
  }
}
