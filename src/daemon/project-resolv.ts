/** The resolv.conf of each `appswitch up` project: the daemon's own, with PROJECT.DOMAIN first in the search list,
 * so a program of project "shop" that asks for `api` gets `api.shop` (its own project's service) before an app
 * named `api`. Written on demand under STATE-DIR/resolv.d (root-owned when the daemon is root, as the setuid
 * launcher requires of the file it binds over /etc/resolv.conf), at most MAX_PROJECT_FILES of them. */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { isValidName, normalizeName, renderResolvConf } from '../dns/index.js';
import { writeFileAtomic } from './atomic-file.js';
import { ControlCallError } from './control-protocol.js';

/** Distinct projects one daemon keeps a resolv.conf for: a bound on what a client can make it write. */
export const MAX_PROJECT_FILES = 1024;

/** Why `project` cannot name a project (one DNS label), or undefined. */
export function projectLabelProblem(project: string): string | undefined {
  const n = normalizeName(project);
  if (n !== project || n.includes('.') || !isValidName(n) || n.includes('_')) {
    return `project ${JSON.stringify(project)} must be one lower-case DNS label (letters, digits, '-')`;
  }
  return undefined;
}

export class ProjectResolvFiles {
  private readonly written = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly nameserver: string,
    private readonly domain: string,
  ) {}

  /** Starts empty: files of a previous daemon (whose nameserver may differ) are removed. */
  reset(): void {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { mode: 0o755 });
  }

  /** The file for `project`, written the first time it is asked for.
   * @throws ControlCallError ERR_BAD_PARAMS for a bad name, ERR_CONFLICT past MAX_PROJECT_FILES */
  pathFor(project: string): string {
    const why = projectLabelProblem(project);
    if (why) throw new ControlCallError('ERR_BAD_PARAMS', why);
    const file = path.join(this.dir, `${project}.conf`);
    if (this.written.has(project)) return file;
    if (this.written.size >= MAX_PROJECT_FILES) {
      throw new ControlCallError('ERR_CONFLICT', `the daemon already keeps ${MAX_PROJECT_FILES} projects' resolv.conf files; restart it to forget them`);
    }
    writeFileAtomic(file, renderResolvConf(this.nameserver, this.domain, [], [`${project}.${this.domain}`]), 0o644);
    this.written.add(project);
    return file;
  }

  /** Files now on disk (tests). */
  list(): string[] {
    return readdirSync(this.dir);
  }
}
