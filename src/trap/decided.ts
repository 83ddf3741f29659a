/** What the daemon does with the connects a generator decided by itself (AS_DECIDED, decided-wire.ts): counts, logs
 * and tracks them as if it had decided them (the same counters and log lines as router.ts). */
import type { Logger } from 'pino';
import type { Endpoint } from '../table/endpoint.js';
import type { ServiceTable } from '../table/service-table.js';
import type { AppRecord } from './apps.js';
import type { ConnectionTracker } from './connections.js';
import type { DecidedRecord } from './decided-wire.js';
import type { HandlerStats } from './handler.js';
import type { RateLimitedLog } from './limits.js';
import type { ConnectObserver } from './observer.js';

export interface DecidedDeps {
  stats: HandlerStats;
  /** Remembers a same-host TCP client for an accept that asks the daemon after all (TrapHandler.reportDecided). */
  report: (app: AppRecord, local: Endpoint, dst: Endpoint) => void;
  connections: ConnectionTracker;
  log: Logger;
  /** The refusal and denial lines, at most one per app and service per interval (the counters and events get all). */
  limitLog: RateLimitedLog;
  table: ServiceTable;
  /** Told of refusals and policy denials (connections set up reach it through the tracker). */
  observer?: Pick<ConnectObserver, 'refused' | 'denied'>;
}

const where = (e: Endpoint): string => (e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`);

/** Counts, logs and tracks connects a generator decided (the same counters and log lines as the daemon's own
 * decisions in handler.ts). */
export function applyDecided(d: DecidedDeps, app: AppRecord, records: DecidedRecord[]): void {
  for (const r of records) {
    d.stats.connects++;
    d.stats.retried += r.retried;
    const base = { app: app.id, appName: app.name, client: app.identity, service: where(r.virt), proto: 'tcp', decidedBy: 'generator' };
    switch (r.kind) {
      case 'fastpath':
        d.stats.fastpathConnections++;
        d.connections.connected({ identity: app.identity, appId: app.id }, r.local, r.real, 'fastpath', r.inode);
        break;
      case 'tcp':
        d.stats.tcpConnections++;
        d.connections.connected({ identity: app.identity, appId: app.id }, r.local, r.real, 'tcp');
        d.report(app, r.local, r.real);
        break;
      case 'no-service':
        d.stats.refused++;
        d.limitLog.info(`no-service/${app.id}/tcp/${base.service}`, base, 'connect refused: no such service');
        d.observer?.refused(app, r.virt.ip, r.virt.port, 'no-service');
        break;
      case 'all-refused':
        d.stats.refused++;
        d.limitLog.info(`all-refused/${app.id}/tcp/${base.service}`, base, 'connect refused: every instance refused');
        d.observer?.refused(app, r.virt.ip, r.virt.port, 'all-refused');
        break;
      case 'denied': {
        d.stats.denied++;
        const vip = r.virt.ip;
        const sample = d.table.lookup({ vip, port: r.virt.port, proto: 'tcp' })[0];
        d.limitLog.warn(
          `denied/${app.id}/tcp/${base.service}`,
          { ...base, clientTags: app.tags, serviceApp: sample?.appId, serviceName: sample?.name, serviceTags: sample?.tags },
          'connect denied by policy',
        );
        d.observer?.denied(app, vip, r.virt.port);
        break;
      }
    }
  }
}
