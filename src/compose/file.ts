/** appswitch.yaml: finding it, reading it and checking it into a ProjectSpec (the format: docs/compose-file.md).
 * Every problem with the file is one ComposeFileError `FILE:LINE: message`, the first one in the file; no input
 * makes it throw anything else. The YAML reading is in yaml-reader.ts, one service in service-spec.ts, the start
 * order in start-order.ts. I/O: reading the file, and a stat of each `cwd:` it names. */
import { closeSync, constants, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import { isMap, isScalar } from 'yaml';
import { AppswitchError } from '../errors.js';
import { q } from './file-error.js';
import { readService, type FileClaims, type ReadService } from './service-spec.js';
import { startOrder } from './start-order.js';
import type { ProjectSpec } from './types.js';
import { describe, YamlReader } from './yaml-reader.js';

export { ComposeFileError } from './file-error.js';

/** The names `appswitch up` looks for in its directory, in this order. */
export const PROJECT_FILE_NAMES = ['appswitch.yaml', 'appswitch.yml'] as const;
/** Larger files are refused unread: no real project needs a megabyte of YAML. */
export const MAX_FILE_BYTES = 1 << 20;
const TOP_KEYS = ['name', 'services'] as const;
const PROJECT_NAME_MAX = 63;

/** undefined when `name` is a good project name (a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending
 * with '-'), else why not, to follow `project name "NAME" `. */
export function projectNameOk(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name.length > PROJECT_NAME_MAX) return `is longer than ${PROJECT_NAME_MAX} characters`;
  if (!/^[a-z0-9-]+$/.test(name)) return "may hold only lower-case letters, digits and '-'";
  if (name.startsWith('-') || name.endsWith('-')) return "must start and end with a letter or digit";
  return undefined;
}

/** The project name a directory gives: its basename lower-cased, characters outside [a-z0-9-] turned into '-',
 * '-' trimmed from both ends (may still be a bad name: check it with projectNameOk). */
export function projectNameFromDir(dir: string): string {
  return basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '');
}

/** The project file of directory `cwd`: appswitch.yaml, else appswitch.yml. Throws AppswitchError ERR_CONFIG
 * `no appswitch.yaml in DIR (or give -f FILE)` when there is neither. */
export function findProjectFile(cwd: string): string {
  for (const name of PROJECT_FILE_NAMES) {
    const file = join(cwd, name);
    if (statSync(file, { throwIfNoEntry: false }) !== undefined) return file;
  }
  throw new AppswitchError('ERR_CONFIG', `no appswitch.yaml in ${cwd} (or give -f FILE)`);
}

/** Reads, parses and checks `file` (see parseProject). A file that cannot be read, is not a regular file or is
 * larger than MAX_FILE_BYTES is an AppswitchError ERR_CONFIG `cannot read FILE: why` (it has no line to name). */
export function loadProject(file: string, opts: { projectName?: string } = {}): ProjectSpec {
  let text: string;
  let fd = -1;
  try {
    /* libuv opens with O_CLOEXEC; O_NONBLOCK: a FIFO given as -f must not hang the open; it is refused below as not a regular file */
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    if (!st.isFile()) throw new AppswitchError('ERR_CONFIG', `cannot read ${file}: not a regular file`);
    if (st.size > MAX_FILE_BYTES) throw new AppswitchError('ERR_CONFIG', `cannot read ${file}: larger than ${MAX_FILE_BYTES} bytes`);
    text = readFileSync(fd, 'utf8');
  } catch (e) {
    if (e instanceof AppswitchError) throw e;
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : (err.code ?? err.message);
    throw new AppswitchError('ERR_CONFIG', `cannot read ${file}: ${why}`);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  if (text.length > MAX_FILE_BYTES) throw new AppswitchError('ERR_CONFIG', `cannot read ${file}: larger than ${MAX_FILE_BYTES} bytes`);
  return parseProject(text, file, opts);
}

/**
 * Parses and checks the text of project file `file` (named in messages as given; relative paths in it are
 * resolved against its directory). The project name is opts.projectName (`-p`, as in compose), else the file's
 * `name:`, else one made
 * from the file's directory (projectNameFromDir). Throws ComposeFileError for the first problem of the file, and
 * AppswitchError ERR_BAD_ARGUMENT when opts.projectName is used and is not a good name.
 */
export function parseProject(text: string, file: string, opts: { projectName?: string } = {}): ProjectSpec {
  const r: YamlReader = YamlReader.parse(text, file); // typed: its fail() then narrows like a throw
  const abs = resolvePath(file);
  const dir = dirname(abs);
  const root = r.root;
  if (root === null || (isScalar(root) && root.value === null)) r.fail(1, 'the file is empty: it needs a services: map');
  if (!isMap(root)) r.fail(root, `the file must be a map with services: (and name:, if you like), not ${describe(root)}`);
  let name: string | undefined;
  let read: ReadService[] | undefined;
  for (const e of r.entries(root, 'at the top level')) {
    r.knownKey(e, TOP_KEYS, 'at the top level');
    if (e.key === 'name') {
      const s = isScalar(e.value) && typeof e.value.value === 'string' ? e.value.value : undefined;
      if (s === undefined) r.fail(e.line, `name must be the project name, a string, not ${describe(e.value)}`);
      const why = projectNameOk(s);
      if (why !== undefined) r.fail(e.line, `project name ${q(s)} ${why}`);
      name = s;
    } else {
      if (!isMap(e.value)) r.fail(e.line, `services must be a map of service names to services, not ${describe(e.value)}`);
      if (e.value.items.length === 0) r.fail(e.line, 'services is empty: give at least one service');
      const claims: FileClaims = { ips: new Map(), hostPorts: new Map() };
      read = [];
      for (const s of r.entries(e.value, 'in services')) read.push(readService(r, s.key, s.keyLine, s.value, dir, claims));
    }
  }
  if (read === undefined) r.fail(1, 'services: is missing: the file needs at least one service');
  const order = startOrder(read);
  if (!Array.isArray(order)) r.fail(order.line, order.message);
  if (opts.projectName !== undefined) {
    const why = projectNameOk(opts.projectName);
    if (why !== undefined) throw new AppswitchError('ERR_BAD_ARGUMENT', `project name ${q(opts.projectName)} ${why}`);
    name = opts.projectName;
  }
  if (name === undefined) {
    const made = projectNameFromDir(dir);
    const why = projectNameOk(made);
    if (why !== undefined) r.fail(1, `no project name: the one made from the directory ${q(basename(dir))} ${why}; set name: in the file`);
    name = made;
  }
  return { name, file: abs, dir, services: order };
}
