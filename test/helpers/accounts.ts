/** A test's own system group and its member (a non-root user in the daemon's group): made before the test, removed
 * after it (and before, in case an earlier run was killed). Names carry the test process's pid. */
import { execFileSync } from 'node:child_process';

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** Removes the test's system users, then their group (each may be missing: an earlier run was killed, or made none). */
export function removeAccounts(users: readonly string[], group: string): void {
  for (const [cmd, name] of [...users.map((u) => ['userdel', u] as const), ['groupdel', group] as const]) {
    try {
      sh(cmd, [name]);
    } catch {
      /* not there */
    }
  }
}

export class GroupMember {
  readonly group: string;
  readonly member: string;

  /** prefix: a few letters naming the test (system names are at most 32 characters). */
  constructor(prefix: string) {
    const tag = (process.pid % 100000).toString();
    this.group = `${prefix}g${tag}`;
    this.member = `${prefix}m${tag}`;
  }

  create(): void {
    this.remove();
    sh('groupadd', ['--system', this.group]);
    sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '-G', this.group, this.member]);
  }

  remove(): void {
    removeAccounts([this.member], this.group);
  }
}
