/** The host's cgroup v2 hierarchy, for the tests of the socket guard's cgroups. */
import { readFileSync } from 'node:fs';

/** The cgroup2 mount point of this (the host's) mount namespace. */
export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (post?.startsWith('cgroup2 ') && pre?.split(' ')[3] === '/') return pre.split(' ')[4] as string;
  }
  throw new Error('no cgroup2 mount');
}
