/** Who may talk to the daemon: root, the daemon's own user, and members of its group (`--group`, default
 * appswitch). The control and trap sockets are made 0660 owner:group (0600 when the group does not exist), and
 * every connection's SO_PEERCRED is checked again here, so a socket file with looser permissions (or a connect
 * in the moment between bind and chmod) still admits no one else. proc(5) for /proc/PID/status. */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, readFileSync } from 'node:fs';
import type { Logger } from 'pino';

/** A connected peer's credentials (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
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

  constructor(
    readonly group: string,
    private readonly log: Logger,
  ) {
    this.gid = lookupGroup(group);
    if (this.gid === undefined) {
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
    return `uid ${peer.uid} is not root and not in group ${this.group}${this.gid === undefined ? ' (which does not exist)' : ''}`;
  }

  /** check(), logging a refusal. */
  admit(peer: PeerCredentials, socket: 'control' | 'trap'): string | undefined {
    const why = this.check(peer);
    if (why !== undefined) this.log.warn({ socket, pid: peer.pid, uid: peer.uid, gid: peer.gid, group: this.group }, `${socket} connection refused: ${why}`);
    return why;
  }
}
