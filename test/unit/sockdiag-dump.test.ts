/** The sweep's TCP table from one sock_diag dump (native/sockdiag.h as_sockdiag_dump_tcp, addon tcpDiagDump,
 * src/daemon/tcp-diag.ts): records decode to the same snapshot as the /proc text, TIME_WAIT sockets are left out by
 * the kernel, malformed records decode to nothing, and a dump that fails either falls back to /proc or, for the
 * failures /proc would not cure, is an error (judge nothing). The kernel part runs in a fresh network namespace. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SnapshotError, snapshotNow, tcpSnapshot, type TcpSnapshot } from '../../src/daemon/listeners.js';
import { decodeDiagRecords, DIAG_RECORD_SIZE, wellFormed } from '../../src/daemon/tcp-diag.js';
import { native } from '../../src/native/binding.js';
import { ROOT } from '../helpers/hosts.js';
import type { PlainSnapshot } from '../helpers/sockdiag-probe.js';

function empty(): TcpSnapshot {
  return { listening: new Set(), sockets: new Set(), outbound: new Map(), liveLocal: new Set(), liveRemote: new Set() };
}

/** One record as native/sockdiag.c writes it. ip: 16 bytes as hex, or an IPv4 dotted quad (written v4-mapped). */
function rec(local: string, lport: number, remote: string, rport: number, inode: number, state: number): Buffer {
  const b = Buffer.alloc(DIAG_RECORD_SIZE);
  const ip = (s: string, at: number): void => {
    if (s.includes('.')) {
      b[at + 10] = 0xff;
      b[at + 11] = 0xff;
      s.split('.').forEach((x, i) => (b[at + 12 + i] = Number(x)));
    } else Buffer.from(s, 'hex').copy(b, at);
  };
  ip(local, 0);
  b.writeUInt16LE(lport, 16);
  ip(remote, 18);
  b.writeUInt16LE(rport, 34);
  b.writeUInt32LE(inode, 36);
  b[40] = state;
  return b;
}

const V6_A = '20010db8000000000000000000000001'; /* 2001:db8::1 */
const V6_B = '20010db80000000000000000000000b0'; /* 2001:db8::b0 */
const ANY6 = '0'.repeat(32);

/** The same sockets as /proc/net/tcp and tcp6 rows (addresses in 32-bit words in host order, little-endian). */
const TCP_HEAD = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const UDP_HEAD = '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n';
const row = (i: number, l: string, r: string, st: string, ino: number): string =>
  `   ${i}: ${l} ${r} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${ino} 1 0000000000000000 100 0 0 10 0\n`;
/** 2001:db8::1 and 2001:db8::b0 as /proc writes them (each 32-bit word byte-swapped). */
const P6_A = 'B80D0120000000000000000001000000';
const P6_B = 'B80D01200000000000000000B0000000';
const P6_ANY = '0'.repeat(32);
const P4M_LO = '0000000000000000FFFF00000100007F'; /* ::ffff:127.0.0.1 */
const PROC = {
  '/proc/net/tcp':
    TCP_HEAD +
    row(0, '0100007F:1F90', '00000000:0000', '0A', 100) +
    row(1, '0100007F:C350', '0100007F:1F90', '01', 101) +
    row(2, '0100007F:1F90', '0100007F:C350', '01', 102) +
    row(3, '0100007F:C351', '0100007F:1F90', '06', 0) /* TIME_WAIT: the dump never has it */ +
    row(4, '0100007F:C352', '0100007F:1F90', '04', 0) /* FIN_WAIT1: not open, not counted */ +
    row(5, '0100007F:1F90', '0100007F:C353', '03', 0) /* SYN_RECV: a request socket */,
  '/proc/net/tcp6':
    TCP_HEAD +
    row(0, `${P6_ANY}:0050`, `${P6_ANY}:0000`, '0A', 200) +
    row(1, `${P6_A}:D000`, `${P6_B}:0050`, '02', 201) +
    row(2, `${P4M_LO}:0050`, `${P4M_LO}:C354`, '08', 202) /* v4-mapped CLOSE_WAIT */,
  '/proc/net/udp': UDP_HEAD,
};
const DUMP = Buffer.concat([
  rec('127.0.0.1', 8080, '0.0.0.0', 0, 100, 10),
  rec('127.0.0.1', 50000, '127.0.0.1', 8080, 101, 1),
  rec('127.0.0.1', 8080, '127.0.0.1', 50000, 102, 1),
  rec('127.0.0.1', 50002, '127.0.0.1', 8080, 0, 4),
  rec('127.0.0.1', 8080, '127.0.0.1', 50003, 0, 3),
  rec(ANY6, 80, ANY6, 0, 200, 10),
  rec(V6_A, 0xd000, V6_B, 80, 201, 2),
  rec('127.0.0.1', 80, '127.0.0.1', 50004, 202, 8),
]);

function reader(files: Record<string, string>): (f: string) => Promise<string> {
  return async (f) => {
    const v = files[f];
    if (v === undefined) throw Object.assign(new Error(`ENOENT ${f}`), { code: 'ENOENT' });
    return v;
  };
}

const failing =
  (code: string): (() => Buffer) =>
  () => {
    throw Object.assign(new Error(`sock_diag ${code}`), { code });
  };

describe('tcp-diag records', () => {
  it('the record size is the addon\'s (AS_SOCKDIAG_REC_SIZE)', () => {
    expect(native.tcpDiagRecordSize()).toBe(DIAG_RECORD_SIZE);
  });

  it('decode to the snapshot that the same sockets give as /proc text, TIME_WAIT row aside', async () => {
    const d = empty();
    expect(decodeDiagRecords(DUMP, d)).toBe(true);
    expect([...d.listening].sort()).toEqual(['100', '200']);
    expect(d.outbound).toEqual(new Map([['127.0.0.1:8080', 1], ['127.0.0.1:50000', 1], ['2001:db8::b0:80', 1]]));
    expect([...d.liveLocal].sort()).toEqual(['127.0.0.1:50000', '127.0.0.1:80', '127.0.0.1:8080', '2001:db8::1:53248']);
    expect([...d.liveRemote].sort()).toEqual(['127.0.0.1:50000', '127.0.0.1:50003', '127.0.0.1:50004', '127.0.0.1:8080', '2001:db8::b0:80']);
    const p = await tcpSnapshot(reader(PROC), null);
    p.sockets.delete('0'); /* the TIME_WAIT row's inode (the request socket's too) */
    d.sockets.delete('0');
    expect(d).toEqual(p);
  });

  it.each([
    ['one byte short', DUMP.subarray(0, DUMP.length - 1)],
    ['one byte long', Buffer.concat([DUMP, Buffer.alloc(1)])],
    ['a TIME_WAIT record', Buffer.concat([DUMP, rec('127.0.0.1', 1, '127.0.0.1', 2, 0, 6)])],
    ['state 0', Buffer.concat([rec('127.0.0.1', 1, '127.0.0.1', 2, 5, 0), DUMP])],
    ['state 12 (NEW_SYN_RECV, never reported)', Buffer.concat([DUMP, rec('127.0.0.1', 1, '127.0.0.1', 2, 5, 12)])],
    ['padding not zero', Buffer.concat([DUMP, ((b) => ((b[43] = 1), b))(rec('127.0.0.1', 1, '127.0.0.1', 2, 5, 1))])],
  ])('a malformed buffer (%s) decodes to nothing, without throwing', (_what, buf) => {
    const d = empty();
    expect(wellFormed(buf)).toBe(false);
    expect(decodeDiagRecords(buf, d)).toBe(false);
    expect(d).toEqual(empty());
  });

  it('an empty dump is an empty table', () => {
    const d = empty();
    expect(decodeDiagRecords(Buffer.alloc(0), d)).toBe(true);
    expect(d).toEqual(empty());
  });
});

describe('tcpSnapshot and snapshotNow with sock_diag', () => {
  it('read the TCP table from the dump, not from /proc', async () => {
    const s = await tcpSnapshot(reader({ ...PROC, '/proc/net/tcp': TCP_HEAD + row(0, '0100007F:0001', '00000000:0000', '0A', 999) }), () => DUMP);
    expect([...s.listening].sort()).toEqual(['100', '200']);
  });

  it.each(['ENOENT', 'EOPNOTSUPP', 'EPROTO', 'EINVAL', 'EUNKNOWN'])('fall back to the /proc text once when the dump fails with %s', async (code) => {
    const s = await tcpSnapshot(reader(PROC), failing(code));
    expect([...s.listening].sort()).toEqual(['100', '200']);
    expect(s.sockets.has('0')).toBe(true); /* the TIME_WAIT row: it came from /proc */
  });

  it('fall back to /proc when the records do not decode', async () => {
    const s = await tcpSnapshot(reader(PROC), () => DUMP.subarray(1));
    expect([...s.listening].sort()).toEqual(['100', '200']);
  });

  it.each(['EMFILE', 'ENFILE', 'EAGAIN'])('%s is an error (judge nothing), not a fallback', async (code) => {
    const p = tcpSnapshot(reader(PROC), failing(code));
    await expect(p).rejects.toBeInstanceOf(SnapshotError);
    await expect(p).rejects.toMatchObject({ code, file: 'sock_diag' });
    expect(() => snapshotNow(failing(code))).toThrow(SnapshotError);
  });

  it('a /proc failure after a fallback is still an error', async () => {
    const p = tcpSnapshot(reader({ '/proc/net/udp': UDP_HEAD }), failing('ENOENT'));
    await expect(p).rejects.toMatchObject({ code: 'ENOENT', file: '/proc/net/tcp' });
  });
});

interface ProbeResult {
  ports: { v4: number; v6: number; dual: number };
  clients: number[];
  twPorts: number[];
  procTimeWaits: number;
  records: Array<{ localPort: number; remotePort: number; inode: number; state: number }>;
  ownSockets: string[];
  diag: PlainSnapshot;
  proc: PlainSnapshot;
  nowDiag: PlainSnapshot;
  nowProc: PlainSnapshot;
}

const TIME_WAITS = 500;
const root = process.getuid?.() === 0;
const dumpWorks = ((): boolean => {
  try {
    native.tcpDiagDump();
    return true;
  } catch {
    return false;
  }
})();

/* needs root (unshare --net) and a kernel with inet_diag for TCP (CONFIG_INET_TCP_DIAG): the fallback is tested above */
describe.skipIf(!root || !dumpWorks)('the kernel dump, in a fresh network namespace', () => {
  let r: ProbeResult;

  it('runs the probe (listeners, pairs, TIME_WAIT sockets)', () => {
    const p = spawnSync('unshare', ['--net', path.join(ROOT, 'node_modules/.bin/vite-node'), path.join(ROOT, 'test/helpers/sockdiag-probe.ts'), String(TIME_WAITS)], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 50_000,
    });
    expect(p.status, p.stderr).toBe(0);
    r = JSON.parse(p.stdout.trim().split('\n').pop() as string) as ProbeResult;
    expect(r.twPorts).toHaveLength(TIME_WAITS);
    expect(r.procTimeWaits).toBeGreaterThanOrEqual(TIME_WAITS); /* they are in the kernel */
  });

  it('lists no TIME_WAIT socket', () => {
    expect(r.records.filter((x) => x.state === 6)).toEqual([]);
    /* the TIME_WAIT connections went from 127.0.0.1:twPort to the IPv4 listener's port (a kept pair of another
     * 4-tuple may share a client port number with one of them) */
    const tw = new Set(r.twPorts);
    const v4 = r.ports.v4;
    expect(r.records.filter((x) => (tw.has(x.localPort) && x.remotePort === v4) || (x.localPort === v4 && tw.has(x.remotePort)))).toEqual([]);
    expect(r.records.length).toBe(3 + 6); /* three listeners, three pairs */
  });

  it('lists the listeners by inode, as this process\'s own sockets', () => {
    const listeners = r.records.filter((x) => x.state === 10);
    expect(listeners.map((x) => x.localPort).sort()).toEqual([r.ports.v4, r.ports.v6, r.ports.dual].sort());
    for (const l of listeners) {
      expect(r.ownSockets).toContain(String(l.inode));
      expect(r.diag.listening).toContain(String(l.inode));
    }
    expect(r.diag.listening).toHaveLength(3);
  });

  it('lists the pairs\' endpoints as live (v4-mapped as IPv4, IPv6 canonical) and counts them outbound', () => {
    const [c4, c6, cDual] = r.clients;
    for (const ep of [`127.0.0.1:${c4}`, `127.0.0.1:${r.ports.v4}`, `::1:${c6}`, `::1:${r.ports.v6}`, `127.0.0.1:${cDual}`, `127.0.0.1:${r.ports.dual}`]) {
      expect(r.diag.liveLocal).toContain(ep);
      expect(r.diag.liveRemote).toContain(ep);
    }
    expect(r.diag.outbound).toContainEqual([`127.0.0.1:${r.ports.v4}`, 1]); /* the TIME_WAIT connections do not count */
    expect(r.diag.outbound).toContainEqual([`::1:${r.ports.v6}`, 1]);
    expect(r.diag.outbound).toContainEqual([`127.0.0.1:${r.ports.dual}`, 1]);
  });

  it('equals the /proc snapshot of the same moment but for the TIME_WAIT rows (tcpSnapshot and snapshotNow)', () => {
    for (const [diag, proc] of [
      [r.diag, r.proc],
      [r.nowDiag, r.nowProc],
    ] as const) {
      expect(proc.sockets).toContain('0'); /* the TIME_WAIT rows' inode */
      expect(diag.sockets).not.toContain('0');
      expect(diag).toEqual({ ...proc, sockets: proc.sockets.filter((s) => s !== '0') });
    }
  });
});
