/** AS_DECIDED (native/proto.h): the connects a generator decided by itself from the decision table, reported in
 * batches after the fact. Decoded once here into typed records; src/trap/server.ts hands them to the handler, which
 * counts, logs and tracks them as if it had decided them. */
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import type { ServiceTable } from '../table/service-table.js';
import type { AppRecord } from './apps.js';
import type { ConnectionTracker } from './connections.js';
import type { HandlerStats } from './handler.js';
import type { Endpoint } from './protocol.js';

export const DECIDED_RECORD = 104;

export type DecidedKind = 'tcp' | 'fastpath' | 'no-service' | 'denied' | 'all-refused';
const KINDS: Record<number, DecidedKind> = { 1: 'tcp', 2: 'fastpath', 3: 'no-service', 4: 'denied', 5: 'all-refused' };

export interface DecidedRecord {
  kind: DecidedKind;
  /** Instances that refused before this one. */
  retried: number;
  local: Endpoint;
  real: Endpoint;
  virt: Endpoint;
  pid: number;
  /** Fast path: inode of the server's end of the socket pair. */
  inode: string | undefined;
  serverApp: string | undefined;
}

function ip(b: Buffer, off: number): string {
  const a = ipaddr.fromByteArray([...b.subarray(off, off + 16)]) as ipaddr.IPv6;
  return a.isIPv4MappedAddress() ? a.toIPv4Address().toString() : a.toString();
}

/** Decodes a batch; records of an unknown kind are skipped (counted in `bad`). */
export function decodeDecided(payload: Buffer): { records: DecidedRecord[]; bad: number } {
  const records: DecidedRecord[] = [];
  let bad = 0;
  for (let o = 0; o + DECIDED_RECORD <= payload.length; o += DECIDED_RECORD) {
    const kind = KINDS[payload.readUInt8(o)];
    if (!kind) {
      bad++;
      continue;
    }
    const inode = payload.readBigUInt64LE(o + 64);
    const app = payload.subarray(o + 72, o + 104);
    const end = app.indexOf(0);
    const serverApp = app.subarray(0, end < 0 ? app.length : end).toString('latin1');
    records.push({
      kind,
      retried: payload.readUInt8(o + 1),
      local: { ip: ip(payload, o + 8), port: payload.readUInt16LE(o + 2) },
      real: { ip: ip(payload, o + 24), port: payload.readUInt16LE(o + 4) },
      virt: { ip: ip(payload, o + 40), port: payload.readUInt16LE(o + 6) },
      pid: payload.readUInt32LE(o + 56),
      inode: inode ? inode.toString() : undefined,
      serverApp: serverApp || undefined,
    });
  }
  if (payload.length % DECIDED_RECORD) bad++;
  return { records, bad };
}

/** AS_CLAIMED payload: per offer 16 bytes of address (IPv4 mapped) and 2 bytes of port, network order. */
export function decodeClaims(payload: Buffer): Endpoint[] {
  const out: Endpoint[] = [];
  for (let o = 0; o + 18 <= payload.length; o += 18) out.push({ ip: ip(payload, o), port: payload.readUInt16BE(o + 16) });
  return out;
}

export interface DecidedDeps {
  stats: HandlerStats;
  /** Remembers a same-host TCP client for an accept that asks the daemon after all (TrapHandler.reportDecided). */
  report: (app: AppRecord, local: Endpoint, dst: Endpoint) => void;
  connections: ConnectionTracker;
  log: Logger;
  table: ServiceTable;
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
        d.log.info(base, 'connect refused: no such service');
        break;
      case 'all-refused':
        d.stats.refused++;
        d.log.info(base, 'connect refused: every instance refused');
        break;
      case 'denied': {
        d.stats.denied++;
        const vip = r.virt.ip;
        const sample = d.table.lookup({ vip, port: r.virt.port, proto: 'tcp' })[0];
        d.log.warn(
          { ...base, clientTags: app.tags, serviceApp: sample?.appId, serviceName: sample?.name, serviceTags: sample?.tags },
          'connect denied by policy',
        );
        break;
      }
    }
  }
}
