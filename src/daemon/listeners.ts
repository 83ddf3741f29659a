/** What the kernel's TCP and UDP tables say about this network namespace: which sockets listen (by inode: the daemon
 * notices a program closing its listening socket), which sockets exist, which endpoints are open, and how many
 * connections are open to each remote endpoint (the in-flight counts of the load balancer). The TCP table is read with
 * sock_diag (one dump that leaves TIME_WAIT sockets in the kernel, src/daemon/tcp-diag.ts decodes it), or, where the
 * kernel cannot dump it, from /proc/net/tcp and tcp6 as text (proc(5)); UDP inodes from /proc/net/udp and udp6. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import ipaddr from 'ipaddr.js';
import type { TcpSnapshot } from './tcp-diag.js';
import { native } from '../native/binding.js';
import { decodeDiagRecords } from './tcp-diag.js';

const TCP_LISTEN = '0A';

const TCP_ESTABLISHED = '01';
const TCP_SYN_SENT = '02';
const TCP_TIME_WAIT = '06';

export type { TcpSnapshot } from './tcp-diag.js';

/** States of a socket whose own side has not closed (include/net/tcp_states.h): SYN_SENT, SYN_RECV, ESTABLISHED
 * and CLOSE_WAIT (the peer closed, this side still holds it). FIN_WAIT*, CLOSING, LAST_ACK, TIME_WAIT: closed. */
const OPEN_STATES = new Set(['01', '02', '03', '08']);

/** "1.2.3.4:80" or "[::1]:80" -> canonical "ip:port" without brackets (v4-mapped as v4). */
function canonicalEndpoint(ep: string): string | undefined {
  const i = ep.lastIndexOf(':');
  try {
    let a = ipaddr.parse(ep.slice(0, i).replace(/^\[|\]$/g, ''));
    if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
    return `${a.toString()}:${ep.slice(i + 1)}`;
  } catch {
    return undefined;
  }
}

/** Decodes /proc/net/tcp's "0100007F:1F90" or the 32-hex-digit IPv6 form (32-bit words in host order). */
export function decodeProcAddress(hex: string): string | undefined {
  const [a, p] = hex.split(':');
  if (!a || !p) return undefined;
  const port = parseInt(p, 16);
  const bytes: number[] = [];
  for (let w = 0; w < a.length; w += 8) {
    const word = a.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (bytes.length === 4) return `${bytes.join('.')}:${port}`;
  if (bytes.length !== 16) return undefined;
  if (bytes.slice(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `${bytes.slice(12).join('.')}:${port}`;
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] as number) << 8) | (bytes[i + 1] as number)).toString(16));
  return `[${groups.join(':')}]:${port}`;
}

export function parseTcp(text: string, into: TcpSnapshot): void {
  parseTcpRows(text.split('\n').slice(1), into);
}

/** The rows of /proc/net/tcp{,6} (header line removed). */
/** A row's state field (the fourth: "N: LOCAL REMOTE ST ...", single spaces), without splitting the whole row. */
function rowState(row: string): string {
  const t = row.trimStart();
  let i = t.indexOf(' ');
  i = t.indexOf(' ', i + 1);
  i = t.indexOf(' ', i + 1);
  return i < 0 ? '' : t.slice(i + 1, i + 3);
}

function parseTcpRows(rows: readonly string[], into: TcpSnapshot): void {
  for (const row of rows) {
    /* TIME_WAIT rows (tens of thousands at thousands of connections a second) have no inode (0) and no state that
     * counts: skipped without splitting them, which kept the daemon's event loop busy for tens of ms per sweep */
    if (rowState(row) === TCP_TIME_WAIT) {
      into.sockets.add('0');
      continue;
    }
    const f = row.trim().split(/\s+/);
    if (f.length <= 9) continue;
    into.sockets.add(f[9] as string);
    if (f[3] === TCP_LISTEN) into.listening.add(f[9] as string);
    else if (OPEN_STATES.has(f[3] as string)) {
      const local = procEndpoint(f[1] as string);
      const remote = procEndpoint(f[2] as string);
      if (local) into.liveLocal.add(local);
      if (remote) into.liveRemote.add(remote);
      /* ESTABLISHED and SYN_SENT are open states */
      if (remote && (f[3] === TCP_ESTABLISHED || f[3] === TCP_SYN_SENT)) into.outbound.set(remote, (into.outbound.get(remote) ?? 0) + 1);
    }
  }
}

/** A /proc address as the canonical "ip:port" (IPv4 is decoded canonical already; IPv6 goes through ipaddr.js, as
 * the sock_diag path does, so that both paths and the balancer's "ip:port" keys agree). */
function procEndpoint(hex: string): string | undefined {
  const d = decodeProcAddress(hex);
  return d && d.startsWith('[') ? canonicalEndpoint(d) : d;
}

/** Reads one /proc file as text (readFile by default; tests inject failures). */
export type ProcReader = (file: string) => Promise<string>;

const readProc: ProcReader = (file) => readFile(file, 'utf8');

/** The kernel's socket tables could not be read in full (`file`: the /proc file, or 'sock_diag' for the dump): the
 * snapshot would say that sockets are gone which are not (a sweep that took it for "nothing is listening" once withdrew
 * every service of the node), so there is none. */
export class SnapshotError extends Error {
  constructor(
    readonly file: string,
    /** The errno code (EMFILE, ENFILE, EACCES, ...; EAGAIN: a sock_diag dump that overran) or 'EPARTIAL' for a file
     * that was not read whole. */
    readonly code: string,
    cause?: unknown,
  ) {
    super(`cannot read ${file}: ${code}`, cause === undefined ? undefined : { cause });
    this.name = 'SnapshotError';
  }
}

/** Reads a /proc/net table and checks that it is whole: the header line, a final newline, and every row with the
 * columns up to the inode. Only a missing IPv6 table (`optional`, ENOENT: no IPv6 in this kernel) counts as empty. */
async function readTable(read: ProcReader, file: string, optional: boolean): Promise<string[]> {
  let text: string;
  try {
    text = await read(file);
  } catch (e) {
    return missingTable(file, optional, e);
  }
  return tableRows(file, text);
}

function missingTable(file: string, optional: boolean, e: unknown): string[] {
  const code = (e as NodeJS.ErrnoException | null)?.code ?? 'EIO';
  if (optional && code === 'ENOENT') return [];
  throw new SnapshotError(file, code, e);
}

function tableRows(file: string, text: string): string[] {
  const lines = text.split('\n');
  if (!text.endsWith('\n') || !/^\s*sl\s/.test(lines[0] ?? '')) throw new SnapshotError(file, 'EPARTIAL');
  lines.pop(); /* after the final newline */
  const rows = lines.slice(1);
  for (const l of rows) if (l.trim().split(/\s+/).length <= 9) throw new SnapshotError(file, 'EPARTIAL');
  return rows;
}

/** Dumps the TCP table in the addon's record format (native.tcpDiagDump); throws an error carrying the errno `code`. */
export type TcpDump = () => Buffer;

const diagDump: TcpDump = () => native.tcpDiagDump();

/** Codes of a dump failure that the /proc text would not cure: no descriptor for the sock_diag socket (the text read
 * would need one too), or a dump that overran and lost sockets (EAGAIN; the next sweep tries again). */
const DIAG_FATAL = new Set(['EMFILE', 'ENFILE', 'EAGAIN']);

function emptySnapshot(): TcpSnapshot {
  return { listening: new Set(), sockets: new Set(), outbound: new Map(), liveLocal: new Set(), liveRemote: new Set() };
}

/** The TCP table from one sock_diag dump, into `into`: true when it was read, false when this kernel cannot dump it
 * (no inet_diag, any other error, or records that do not decode) and the /proc text must be read instead. Throws
 * SnapshotError for the DIAG_FATAL codes. */
function tcpFromDiag(dump: TcpDump, into: TcpSnapshot): boolean {
  let buf: Buffer;
  try {
    buf = dump();
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && DIAG_FATAL.has(code)) throw new SnapshotError('sock_diag', code, e);
    return false;
  }
  return decodeDiagRecords(buf, into);
}

/** The same snapshot as tcpSnapshot, read now and synchronously: for the rare moment an app reaches one of its limits
 * (bound sockets, connections not yet accepted), so that sockets it closed since the last sweep stop counting at once.
 * Throws SnapshotError as tcpSnapshot does. `dump` null: the /proc text only. */
export function snapshotNow(dump: TcpDump | null = diagDump): TcpSnapshot {
  const out = emptySnapshot();
  const rows = (file: string, optional: boolean): string[] => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      return missingTable(file, optional, e);
    }
    return tableRows(file, text);
  };
  if (!dump || !tcpFromDiag(dump, out)) parseTcpRows([...rows('/proc/net/tcp', false), ...rows('/proc/net/tcp6', true)], out);
  for (const line of [...rows('/proc/net/udp', false), ...rows('/proc/net/udp6', true)]) out.sockets.add(line.trim().split(/\s+/)[9] as string);
  return out;
}

/** Reads the TCP and UDP tables of this namespace: TCP with one sock_diag dump (`dump`; null: the /proc text only),
 * falling back to /proc/net/tcp{,6} once when the dump fails for another reason than those of DIAG_FATAL; UDP from
 * /proc/net/udp{,6} through `read`. Throws SnapshotError when any of them cannot be read whole: the caller must then
 * judge nothing (a socket missing from a failed read is not a closed socket). */
export async function tcpSnapshot(read: ProcReader = readProc, dump: TcpDump | null = diagDump): Promise<TcpSnapshot> {
  const out = emptySnapshot();
  if (!dump || !tcpFromDiag(dump, out)) {
    for (const [file, optional] of [
      ['/proc/net/tcp', false],
      ['/proc/net/tcp6', true],
    ] as const) {
      parseTcpRows(await readTable(read, file, optional), out);
    }
  }
  for (const [file, optional] of [
    ['/proc/net/udp', false],
    ['/proc/net/udp6', true],
  ] as const) { /* same layout; only the inodes are used */
    for (const line of await readTable(read, file, optional)) {
      const f = line.trim().split(/\s+/);
      out.sockets.add(f[9] as string);
    }
  }
  return out;
}

/** Inodes of every Unix socket of this network namespace (/proc/net/unix, column 7). */
export async function unixInodes(): Promise<Set<string>> {
  const out = new Set<string>();
  const lines = (await readFile('/proc/net/unix', 'utf8')).split('\n');
  for (let i = 1; i < lines.length; i++) {
    const f = (lines[i] as string).trim().split(/\s+/);
    if (f.length >= 7) out.add(f[6] as string);
  }
  return out;
}
