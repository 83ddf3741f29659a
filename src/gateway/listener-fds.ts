/** Where a program holds a socket: the {pid, fd} of a listening socket known by its inode (the service table's
 * `socket`), found in /proc/PID/fd of the program and its descendants (servers that fork workers, or whose parent
 * closed the listener after forking). Reads /proc only; proc(5). */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** How many processes of one program are searched at most (a program forking without bound cannot stall us). */
const MAX_PROCS = 256;

export interface SocketHolder {
  pid: number;
  fd: number;
}

/** Reads the /proc views this module needs; injected in tests. */
export interface ProcView {
  /** The entries of /proc/PID/fd (numbers), or [] when the process is gone. */
  fds(pid: number): number[];
  /** readlink of /proc/PID/fd/FD ("socket:[INODE]"), or undefined. */
  link(pid: number, fd: number): string | undefined;
  /** The children of pid (/proc/PID/task/TID/children of every thread). */
  children(pid: number): number[];
}

export const procView: ProcView = {
  fds(pid) {
    try {
      return readdirSync(`/proc/${pid}/fd`).map(Number).filter(Number.isInteger);
    } catch {
      return [];
    }
  },
  link(pid, fd) {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return undefined;
    }
  },
  children(pid) {
    const out: number[] = [];
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      return out;
    }
    for (const t of tids) {
      try {
        for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(/\s+/)) if (c) out.push(Number(c));
      } catch {
        /* the thread ended */
      }
    }
    return out;
  },
};

/** The first process of the tree rooted at `pid` (breadth first, at most MAX_PROCS processes) that holds socket
 * `inode`, and the descriptor it holds it as; undefined when none does. */
export function findSocket(pid: number, inode: string, proc: ProcView = procView): SocketHolder | undefined {
  const want = `socket:[${inode}]`;
  const queue = [pid];
  const seen = new Set<number>();
  while (queue.length > 0 && seen.size < MAX_PROCS) {
    const p = queue.shift() as number;
    if (seen.has(p)) continue;
    seen.add(p);
    for (const fd of proc.fds(p)) if (proc.link(p, fd) === want) return { pid: p, fd };
    queue.push(...proc.children(p));
  }
  return undefined;
}
