/** Run by test/unit/sockdiag-dump.test.ts in a fresh network namespace (unshare --net, vite-node): opens listeners
 * (IPv4, IPv6, dual-stack), connected pairs (IPv4, IPv6, IPv4 to the dual-stack listener: a v4-mapped server side),
 * and TIME_WAIT sockets, then reads the TCP table both ways at the same moment (nothing else runs in the namespace)
 * and prints one JSON object on stdout. Argument: how many TIME_WAIT sockets. */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type net from 'node:net';
import { snapshotNow, tcpSnapshot, type TcpSnapshot } from '../../src/daemon/listeners.js';
import { native } from '../../src/native/binding.js';
import { connect, listen, portOf, prepareNamespace, procTimeWaits, timeWaits } from './tcp-churn.js';

/** A snapshot as plain JSON (sorted, so that two snapshots compare with toEqual). */
export interface PlainSnapshot {
  listening: string[];
  sockets: string[];
  outbound: Array<[string, number]>;
  liveLocal: string[];
  liveRemote: string[];
}

function plain(s: TcpSnapshot): PlainSnapshot {
  return {
    listening: [...s.listening].sort(),
    sockets: [...s.sockets].sort(),
    outbound: [...s.outbound].sort((a, b) => a[0].localeCompare(b[0])),
    liveLocal: [...s.liveLocal].sort(),
    liveRemote: [...s.liveRemote].sort(),
  };
}

/** A raw record of the dump, read with the offsets of native/sockdiag.h (independently of src/daemon/tcp-diag.ts). */
interface RawRecord {
  localPort: number;
  remotePort: number;
  inode: number;
  state: number;
}

function rawRecords(buf: Buffer): RawRecord[] {
  const out: RawRecord[] = [];
  for (let o = 0; o + 44 <= buf.length; o += 44) {
    out.push({ localPort: buf.readUInt16LE(o + 16), remotePort: buf.readUInt16LE(o + 34), inode: buf.readUInt32LE(o + 36), state: buf[o + 40] as number });
  }
  return out;
}

/** Inodes of this process's own sockets (/proc/self/fd links "socket:[N]"). */
function ownSocketInodes(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) out.push(m[1] as string);
    } catch {
      /* the directory's own fd, closed meanwhile */
    }
  }
  return out;
}

/** Whether /proc/net/tcp{,6} still has other sockets than the 3 listeners, 6 pair ends and the TIME_WAIT ones. */
function settling(): boolean {
  const text = readFileSync('/proc/net/tcp', 'utf8') + readFileSync('/proc/net/tcp6', 'utf8');
  const rows = text.split('\n').filter((l) => /^\s*\d+:/.test(l));
  return rows.length - procTimeWaits(text) !== 9;
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? '300');
  prepareNamespace();
  const v4 = await listen('127.0.0.1');
  const v6 = await listen('::1');
  const dual = await listen('::');
  const keep: net.Socket[] = [];
  keep.push(await connect('127.0.0.1', portOf(v4)));
  keep.push(await connect('::1', portOf(v6)));
  keep.push(await connect('127.0.0.1', portOf(dual)));
  const twPorts = await timeWaits('127.0.0.1', portOf(v4), n);
  /* settle: the last server sides leave LAST_ACK once the client's ACK is in and this process has closed them; then
   * the table holds the three listeners, the three pairs (six sockets) and the TIME_WAIT sockets, nothing that moves */
  for (let waited = 0; waited < 10_000 && settling(); waited += 50) await new Promise((r) => setTimeout(r, 50));

  const dump = native.tcpDiagDump();
  const diag = await tcpSnapshot();
  const proc = await tcpSnapshot(undefined, null);
  const nowDiag = snapshotNow();
  const nowProc = snapshotNow(null);
  const procText = readFileSync('/proc/net/tcp', 'utf8') + readFileSync('/proc/net/tcp6', 'utf8');
  const result = {
    ports: { v4: portOf(v4), v6: portOf(v6), dual: portOf(dual) },
    clients: keep.map((c) => c.localPort),
    twPorts,
    procTimeWaits: procTimeWaits(procText),
    records: rawRecords(dump),
    dumpBytes: dump.length,
    ownSockets: ownSocketInodes(),
    diag: plain(diag),
    proc: plain(proc),
    nowDiag: plain(nowDiag),
    nowProc: plain(nowProc),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  for (const c of keep) c.destroy();
  for (const s of [v4, v6, dual]) s.close();
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`${String((e as Error).stack ?? e)}\n`);
  process.exit(1);
});
