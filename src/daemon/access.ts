/** Who may talk to the daemon: root, the daemon's own user, and members of its group (`--group`, default
 * appswitch). The control and trap sockets are made 0660 owner:group (0600 when the group does not exist), and
 * every connection's SO_PEERCRED is checked again here, so a socket file with looser permissions (or a connect
 * in the moment between bind and chmod) still admits no one else. On top of that, the trap socket admits only real
 * generators (the launcher's executable, not under a seccomp filter, CAP_SYS_ADMIN in the daemon's user namespace:
 * `appswitch run` started by root, or by a member of the group through the setuid launcher, whose real uid then owns
 * the app), and the control socket refuses programs under appswitch. proc(5) for
 * /proc/PID/{status,stat,exe,ns}, capabilities(7). */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, constants, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import { launcherPath } from '../native/binding.js';

const CAP_SYS_ADMIN = 21n;

/** What the daemon needs to know about a connected process, read through one handle on its /proc directory. */
export interface ProcessFacts {
  /** Device and inode of its executable (undefined when the link cannot be followed, e.g. a zombie). */
  exe?: { dev: number; ino: number };
  exePath: string;
  /** /proc/PID/status Seccomp: 0 none, 1 strict, 2 filter. */
  seccomp: number;
  capEff: bigint;
  /** /proc/PID/status Uid: the real uid (SO_PEERCRED gives the effective one: 0 for the setuid launcher). */
  realUid: number;
  /** Its real gid and supplementary groups (/proc/PID/status Gid, first field, and Groups). */
  groups: number[];
  /** Inodes of its user and network namespaces; -1 when the daemon may not look (EACCES: a non-dumpable process
   * whose memory belongs to a user namespace the daemon has no CAP_SYS_PTRACE in, such as a private daemon's
   * launcher, see generator()). */
  userNs: number;
  netNs: number;
  /** When it started, in clock ticks since boot (/proc/PID/stat field 22). */
  startTicks: number;
}

/** Reads a process's facts through a descriptor of its /proc/PID directory, so every read is about the same
 * process: if it ends and its pid is reused meanwhile, reads through the old directory fail (ESRCH) instead of
 * describing the newcomer. `bornBy` (PeerCredentials.acceptedAt): a process that started
 * after that cannot be the one that connected (its pid was reused between the connect and this read). Undefined
 * when it is gone, or is not the process that connected; the errno code when the daemon could not look (EMFILE). */
export function readProcess(pid: number, bornBy?: number): ProcessFacts | string | undefined {
  let dir: number;
  try {
    dir = openSync(`/proc/${pid}`, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (e) {
    return lookError(e);
  }
  const base = `/proc/self/fd/${dir}`;
  try {
    const status = readFileSync(`${base}/status`, 'utf8');
    const stat = readFileSync(`${base}/stat`, 'utf8');
    /* field 22, counted after the ")" that ends the command name (which may itself hold spaces and parentheses) */
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    if (!Number.isFinite(startTicks) || (bornBy !== undefined && startTicks > bornBy)) return undefined;
    const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S*)`, 'm').exec(status)?.[1] ?? '';
    const list = (name: string): number[] =>
      (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
    let exe: ProcessFacts['exe'];
    let exePath = '?';
    try {
      const st = statSync(`${base}/exe`);
      exe = { dev: st.dev, ino: st.ino };
      exePath = readlinkSafe(`${base}/exe`);
    } catch {
      /* a zombie, or a kernel thread */
    }
    return {
      exe,
      exePath,
      seccomp: Number(field('Seccomp') || '-1'),
      capEff: BigInt(`0x${field('CapEff') || '0'}`),
      realUid: Number(field('Uid') || '-1'),
      groups: [...list('Gid').slice(0, 1), ...list('Groups')],
      userNs: nsInode(`${base}/ns/user`),
      netNs: nsInode(`${base}/ns/net`),
      startTicks,
    };
  } catch (e) {
    return lookError(e);
  } finally {
    closeSync(dir);
  }
}

/** The inode of a /proc/PID/ns link, -1 when ptrace access is refused (EACCES); other errors are thrown. */
function nsInode(p: string): number {
  try {
    return statSync(p).ino;
  } catch (e) {
    if ((e as { code?: string }).code === 'EACCES') return -1;
    throw e;
  }
}

/** undefined when a read of /proc says the process is gone; the code when the daemon itself failed to look. */
function lookError(e: unknown): string | undefined {
  const code = (e as { code?: string }).code;
  return code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM' ? code : undefined;
}

function readlinkSafe(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '?';
  }
}

/** A connected peer's credentials (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  /** When the connection was accepted, in clock ticks since boot (USER_HZ, 100; /proc/uptime): a process younger
   * than that is not the peer (pid reuse). */
  acceptedAt?: number;
}

/** The gid of a group by name (NSS through getent, then /etc/group), or undefined when there is none. */
export function lookupGroup(name: string): number | undefined {
  let line: string | undefined;
  try {
    line = execFileSync('getent', ['group', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n')[0];
  } catch (e) {
    if ((e as { status?: number }).status === 2) return undefined; /* getent: key not found */
    try {
      line = readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${name}:`));
    } catch {
      return undefined;
    }
  }
  const gid = Number(line?.split(':')[2]);
  return line && Number.isInteger(gid) ? gid : undefined;
}

/** The supplementary groups and uid of a process, from /proc/PID/status (undefined when it is gone). */
export function processGroups(pid: number): { uid: number; groups: number[] } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string): number[] =>
    (new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  return { uid: field('Uid')[1] ?? -1, groups: [...field('Gid'), ...field('Groups')] };
}

export class AccessControl {
  /** The group's gid, or undefined when it does not exist (then only root and the daemon's user). */
  readonly gid: number | undefined;
  private readonly self = process.getuid?.() ?? 0;
  /** The daemon's own namespaces (inodes of /proc/self/ns/*). */
  private readonly ns = { user: statSync('/proc/self/ns/user').ino, net: statSync('/proc/self/ns/net').ino };

  /** privateMode: a private daemon (`--private`): no group at all (root and the daemon's user only), sockets 0600,
   * and generators in a user namespace of their own (the launcher's, native/caller.h as_caller_private_ns). */
  constructor(
    readonly group: string,
    private readonly log: Logger,
    readonly privateMode = false,
  ) {
    this.gid = privateMode ? undefined : lookupGroup(group);
    if (this.gid === undefined && !privateMode) {
      this.log.warn({ group }, 'group does not exist: the control and trap sockets are for root only (create it: groupadd --system appswitch)');
    }
  }

  /** Makes a socket file 0660 owner:group, or 0600 when there is no group. */
  secure(path: string): void {
    if (this.gid !== undefined) {
      chownSync(path, this.self, this.gid);
      chmodSync(path, 0o660);
    } else {
      chmodSync(path, 0o600);
    }
  }

  /** Undefined when the peer may connect, else why not (for the error and the log). */
  check(peer: PeerCredentials): string | undefined {
    if (peer.uid === 0 || peer.uid === this.self) return undefined;
    if (this.gid !== undefined) {
      if (peer.gid === this.gid) return undefined;
      const p = processGroups(peer.pid);
      /* the pid must still be the connecting user's process (not a reused pid) */
      if (p && p.uid === peer.uid && p.groups.includes(this.gid)) return undefined;
    }
    if (this.privateMode) return `uid ${peer.uid} is not root and not uid ${this.self}, whose private daemon this is`;
    return `uid ${peer.uid} is not root and not in group ${this.group}${this.gid === undefined ? ' (which does not exist)' : ''}`;
  }

  /** Undefined when the trap socket's peer is a real generator, else why not: the launcher's executable (same
   * device and inode as launcherPath(), looked up now so a rebuilt launcher counts), not under a seccomp filter (a
   * trapped program that execs the launcher is), and CAP_SYS_ADMIN effective in the daemon's user namespace (what
   * creating the program's network namespace takes: `appswitch run` started by root). */
  checkGenerator(peer: PeerCredentials): string | undefined {
    const g = this.generator(peer);
    return typeof g === 'string' ? g : undefined;
  }

  /** checkGenerator's facts: why not, or who the generator runs for. A generator started by an ordinary user (the
   * setuid launcher: real uid not 0) must be in the daemon's group by its real ids too, so a launcher installed with
   * another group than the daemon's --group admits no one the daemon would not. */
  private generator(peer: PeerCredentials): string | { realUid: number } {
    const p = readProcess(peer.pid, peer.acceptedAt);
    if (typeof p === 'string') return `the daemon cannot check pid ${peer.pid} now (${p}); try again later`;
    if (!p) return `pid ${peer.pid} is gone or is not the process that connected`;
    let launcher: { dev: number; ino: number };
    try {
      const st = statSync(launcherPath());
      launcher = { dev: st.dev, ino: st.ino };
    } catch (e) {
      return `the launcher cannot be found (${(e as Error).message})`;
    }
    if (p.seccomp !== 0) return `pid ${peer.pid} is under a seccomp filter (a program under appswitch, or a sandbox)`;
    /* A private daemon cannot look at its launchers' executables: a launcher makes a user namespace of its own and is
     * not dumpable, and the daemon has no CAP_SYS_PTRACE over memory that belongs to the host's user namespace. It
     * admits, then, any process of its own user that is not under a seccomp filter (so never a program under
     * appswitch): that is the user, whom a private daemon serves anyway (docs/private-daemon.md). */
    const hiddenOwn = this.privateMode && p.realUid === this.self && !p.exe && p.userNs === -1;
    if (hiddenOwn) return { realUid: p.realUid };
    if (!p.exe || p.exe.dev !== launcher.dev || p.exe.ino !== launcher.ino) return `pid ${peer.pid} runs ${p.exePath}, not the appswitch launcher`;
    /* a private daemon's generator has made a user namespace of its own, where it has CAP_SYS_ADMIN (/proc shows
     * its capabilities there); it runs as the daemon's user, who could do the same without appswitch */
    if (p.userNs !== this.ns.user && !(this.privateMode && p.realUid === this.self)) return `pid ${peer.pid} is in another user namespace`;
    if (!(p.capEff & (1n << CAP_SYS_ADMIN))) return `pid ${peer.pid} lacks CAP_SYS_ADMIN (appswitch run must be started by root${this.privateMode ? ', or by this private daemon\'s user' : ''})`;
    if (!Number.isInteger(p.realUid) || p.realUid < 0) return `pid ${peer.pid}: its real uid cannot be read`;
    if (p.realUid !== 0 && p.realUid !== this.self && (this.gid === undefined || !p.groups.includes(this.gid))) {
      return `pid ${peer.pid} runs for uid ${p.realUid}, which is not in group ${this.group}`;
    }
    return { realUid: p.realUid };
  }

  /** Undefined unless the control socket's peer is a program under appswitch: under a seccomp filter (mode 2) and in
   * a network namespace other than the daemon's. A trapped program can leave neither (the filter refuses setns and
   * new network namespaces, and a filter is never removed), while a CLI started from a shell has no filter; a CLI in
   * a seccomp sandbox (a container) in another network namespace is refused too, a stated limit. */
  checkNotTrapped(peer: PeerCredentials): string | undefined {
    const p = readProcess(peer.pid);
    if (typeof p === 'string') return `the daemon cannot check pid ${peer.pid} now (${p}); try again later`;
    if (!p) return undefined; /* gone: its connection ends with it */
    if (p.seccomp === 2 && p.netNs !== this.ns.net) return `pid ${peer.pid} is a program under appswitch (seccomp filter, network namespace of its own): programs may not use the control API`;
    return undefined;
  }

  /** The trap socket's admission (admit(peer, 'trap')), and when admitted, the uid the app belongs to: the
   * generator's real uid (a member through the setuid launcher; root's `appswitch run` is 0), never SO_PEERCRED's
   * effective uid, which is 0 for every generator. */
  admitGenerator(peer: PeerCredentials): string | { uid: number } {
    const denied = this.check(peer);
    if (denied !== undefined) {
      this.log.warn({ socket: 'trap', pid: peer.pid, uid: peer.uid, gid: peer.gid, group: this.group }, `trap connection refused: ${denied}`);
      return `permission denied: ${denied}`;
    }
    const g = this.generator(peer);
    if (typeof g !== 'string') return { uid: g.realUid };
    this.log.warn({ socket: 'trap', pid: peer.pid, uid: peer.uid, gid: peer.gid, exe: readlinkSafe(`/proc/${peer.pid}/exe`) }, `trap connection refused: ${g}`);
    return `only appswitch run may register programs (${g})`;
  }

  /** check() and, per socket, checkGenerator() / checkNotTrapped(), logging a refusal. For the trap socket the
   * answer is the whole text after `ERR_PERMISSION: `. */
  admit(peer: PeerCredentials, socket: 'control' | 'trap'): string | undefined {
    const denied = this.check(peer);
    if (denied !== undefined) {
      this.log.warn({ socket, pid: peer.pid, uid: peer.uid, gid: peer.gid, group: this.group }, `${socket} connection refused: ${denied}`);
      return socket === 'trap' ? `permission denied: ${denied}` : denied;
    }
    const why = socket === 'trap' ? this.checkGenerator(peer) : this.checkNotTrapped(peer);
    if (why === undefined) return undefined;
    this.log.warn({ socket, pid: peer.pid, uid: peer.uid, gid: peer.gid, exe: readlinkSafe(`/proc/${peer.pid}/exe`) }, `${socket} connection refused: ${why}`);
    return socket === 'trap' ? `only appswitch run may register programs (${why})` : why;
  }
}
