/** Where a project's supervisor keeps its socket, pid and logs: a directory only its user can enter.
 * Root: /run/appswitch-projects/NAME. Others: $XDG_RUNTIME_DIR/appswitch/projects/NAME, else
 * /tmp/appswitch-UID/projects/NAME. Every level we create is 0700; one that exists must be a directory owned by
 * the user and not writable by others (a /tmp path another user made first is refused, not used). */
import { lstatSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { AppswitchError } from '../errors.js';

export interface ProjectPaths {
  dir: string;
  socket: string;
  pidFile: string;
  log: string;
  /** The detached supervisor's own stdout/stderr. */
  supervisorLog: string;
}

export function projectsBase(uid = process.getuid?.() ?? 0, env: NodeJS.ProcessEnv = process.env): string {
  if (uid === 0) return '/run/appswitch-projects';
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'appswitch', 'projects');
  return path.join('/tmp', `appswitch-${uid}`, 'projects');
}

export function projectPaths(project: string, base = projectsBase()): ProjectPaths {
  const dir = path.join(base, project);
  return {
    dir,
    socket: path.join(dir, 'supervisor.sock'),
    pidFile: path.join(dir, 'supervisor.pid'),
    log: path.join(dir, 'logs.jsonl'),
    supervisorLog: path.join(dir, 'supervisor.log'),
  };
}

/** The existing directory below which projectsBase() makes its own levels (/run, $XDG_RUNTIME_DIR or /tmp). */
export function baseRoot(uid = process.getuid?.() ?? 0, env: NodeJS.ProcessEnv = process.env): string {
  if (uid === 0) return '/run';
  const xdg = env.XDG_RUNTIME_DIR;
  return xdg && path.isAbsolute(xdg) ? xdg : '/tmp';
}

/** Makes each level of `dir` below `root` a 0700 directory, checking those that exist: a directory (not a link),
 * owned by `uid`, not writable by group or others. */
export function ensurePrivateDir(dir: string, root: string, uid = process.getuid?.() ?? 0): void {
  const rel = path.relative(root, dir);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new AppswitchError('ERR_CONFIG', `${dir} is not below ${root}`);
  let d = root;
  for (const seg of rel.split(path.sep).filter(Boolean)) {
    d = path.join(d, seg);
    let st;
    try {
      st = lstatSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      mkdirSync(d, { mode: 0o700 });
      continue;
    }
    if (!st.isDirectory()) throw new AppswitchError('ERR_PERMISSION', `${d} is not a directory`);
    if (st.uid !== uid) throw new AppswitchError('ERR_PERMISSION', `${d} belongs to uid ${st.uid}, not to you (uid ${uid}); remove it or set XDG_RUNTIME_DIR`);
    if ((st.mode & 0o022) !== 0) throw new AppswitchError('ERR_PERMISSION', `${d} is writable by others (mode ${(st.mode & 0o777).toString(8)}); make it 0700`);
  }
}
