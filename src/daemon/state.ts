/** The daemon's saved state (`<state-dir>/state.json`, mode 0600): the running apps, their bound sockets and their
 * services, so that a daemon that restarts (crash, upgrade, `systemctl restart`) takes over the programs that kept
 * running, instead of forgetting them. Written atomically (temporary file + rename) shortly after each change;
 * read once at start. `appswitch daemon --clean` deletes it and starts empty.
 *
 * Format 2 is JSON lines: a header line `{"format":2,"node":...,"savedAt":...}`, then one record per line
 * (`{"app":...}`, `{"binding":[inode, binding]}`, `{"service":...}`), so that a file damaged in the middle loses only
 * the damaged records: whatever can be read is restored, with a warning, and the daemon never refuses to start over
 * its state file. Format 1 (one JSON document) is still read. */
import { renameSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import type { Logger } from 'pino';
import type { AppRecord } from '../trap/apps.js';
import type { Binding, HandlerSnapshot } from '../trap/handler.js';
import type { ServiceEntry } from '../table/service-table.js';
import { isFdExhaustion } from '../trap/fdbudget.js';

export const STATE_FILE = 'state.json';
const FORMAT = 2;
const FORMAT_V1 = 1;

interface SavedState {
  format: number;
  node: string;
  savedAt: string;
  apps: AppRecord[];
  bindings: Array<[string, Binding]>;
  services: ServiceEntry[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length < 4096;
const isPort = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 65536;
const isEndpoint = (v: unknown): boolean => isObj(v) && isStr(v.ip) && isPort(v.port);
const isTags = (v: unknown): boolean => isObj(v) && Object.values(v).every((x) => typeof x === 'string');

function validApp(a: unknown): a is AppRecord {
  return (
    isObj(a) &&
    isStr(a.id) &&
    /^[0-9a-f]{8}$/.test(a.id) &&
    isStr(a.identity) &&
    isStr(a.secret) &&
    /^[0-9a-f]{32}$/.test(a.secret) &&
    typeof a.uid === 'number' &&
    typeof a.launcherPid === 'number' &&
    typeof a.startedAt === 'number' &&
    isTags(a.tags) &&
    Array.isArray(a.cmd) &&
    (a.ip === undefined || isStr(a.ip)) &&
    (a.name === undefined || isStr(a.name))
  );
}

function validBinding(b: unknown): b is [string, Binding] {
  if (!Array.isArray(b) || b.length !== 2 || !isStr(b[0]) || !isObj(b[1])) return false;
  const v = b[1];
  return isStr(v.appId) && (v.proto === 'tcp' || v.proto === 'udp') && isEndpoint(v.virt) && isEndpoint(v.real) && (v.serviceId === undefined || isStr(v.serviceId)) && (v.family === undefined || v.family === 4 || v.family === 6) && (v.v6only === undefined || typeof v.v6only === 'boolean');
}

function validService(e: unknown): e is ServiceEntry {
  return (
    isObj(e) && isStr(e.id) && isStr(e.vip) && isPort(e.port) && (e.proto === 'tcp' || e.proto === 'udp') && isEndpoint(e.endpoint) && isStr(e.appId) && isTags(e.tags) && (e.socket === undefined || isStr(e.socket))
  );
}

/** Reads the saved state of node `node`. A missing file is no state. A file whose header cannot be read (not a state
 * file, another format, another node) is moved aside (`state.json.bad`) with a log line, and the daemon starts empty;
 * records that cannot be read (damaged lines, invalid fields) are skipped with a warning and the rest is restored.
 * `formerNames`: names this node's state may have been saved under by an older version (its default name was the
 * hostname); such a state is taken over, with a log line. */
export function loadState(dir: string, node: string, log: Logger, formerNames: readonly string[] = []): HandlerSnapshot | undefined {
  const file = path.join(dir, STATE_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: e, file }, 'saved state unreadable: starting empty');
    return undefined;
  }
  const lines = text.split('\n');
  let why = '';
  let header: unknown;
  try {
    header = JSON.parse(lines[0] ?? '');
  } catch (e) {
    why = (e as Error).message;
  }
  if (isObj(header) && header.node !== node && typeof header.node === 'string' && formerNames.includes(header.node)) {
    log.info({ file, savedBy: header.node, node }, "saved state of this node's former default name taken over");
    header.node = node;
  }
  if (!why && isObj(header) && header.format === FORMAT_V1) return loadV1(header, node, file, log);
  if (!why && (!isObj(header) || header.format !== FORMAT)) why = 'unknown format';
  else if (!why && isObj(header) && header.node !== node) why = `saved by node ${String(header.node)}, this is ${node}`;
  if (why) {
    log.error({ file, reason: why }, 'saved state rejected (moved to state.json.bad): starting empty');
    moveAside(file);
    return undefined;
  }
  const snap: HandlerSnapshot = { apps: [], bindings: [], services: [] };
  let dropped = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (!line.trim()) continue;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      dropped++;
      continue;
    }
    if (isObj(r) && validApp(r.app)) snap.apps.push(r.app);
    else if (isObj(r) && validBinding(r.binding)) snap.bindings.push(r.binding);
    else if (isObj(r) && validService(r.service)) snap.services.push(r.service);
    else dropped++;
  }
  if (dropped) log.warn({ file, dropped, apps: snap.apps.length, bindings: snap.bindings.length, services: snap.services.length }, 'saved state damaged: unreadable records skipped, the rest restored');
  return snap;
}

/** Format 1: one JSON document. */
function loadV1(s: Obj, node: string, file: string, log: Logger): HandlerSnapshot | undefined {
  let why = '';
  if (s.node !== node) why = `saved by node ${String(s.node)}, this is ${node}`;
  else if (!Array.isArray(s.apps) || !Array.isArray(s.bindings) || !Array.isArray(s.services)) why = 'missing sections';
  else {
    const st = s as unknown as SavedState;
    const apps = st.apps.filter(validApp);
    const bindings = st.bindings.filter(validBinding);
    const services = st.services.filter(validService);
    const dropped = st.apps.length - apps.length + (st.bindings.length - bindings.length) + (st.services.length - services.length);
    if (dropped) log.warn({ file, dropped }, 'saved state: invalid records skipped');
    return { apps, bindings, services };
  }
  log.error({ file, reason: why }, 'saved state rejected (moved to state.json.bad): starting empty');
  moveAside(file);
  return undefined;
}

function moveAside(file: string): void {
  try {
    renameSync(file, `${file}.bad`);
  } catch {
    /* gone meanwhile */
  }
}

/** The text of a saved state (format 2, see the file's header comment). */
export function encodeState(node: string, snap: HandlerSnapshot, savedAt = new Date()): string {
  const out = [JSON.stringify({ format: FORMAT, node, savedAt: savedAt.toISOString() })];
  for (const app of snap.apps) out.push(JSON.stringify({ app }));
  for (const binding of snap.bindings) out.push(JSON.stringify({ binding }));
  for (const service of snap.services) out.push(JSON.stringify({ service }));
  return `${out.join('\n')}\n`;
}

/** Deletes the saved state (`--clean`). */
export function clearState(dir: string): void {
  rmSync(path.join(dir, STATE_FILE), { force: true });
}

/** Saves snapshots: `schedule()` coalesces bursts of changes into one write a few ms later; `flush()` writes now;
 * after `freeze()` nothing is written any more (a stopping daemon must not save the apps it lets go of). */
/** How soon a save that found no descriptor is tried again (ms). */
const RETRY_MS = 250;

export class StateWriter {
  private timer: NodeJS.Timeout | undefined;
  private frozen = false;
  writes = 0;
  /** A save found no descriptor to open its file with (EMFILE/ENFILE): reported here instead of logged each time,
   * and the save is tried again RETRY_MS later until it succeeds. */
  onNoDescriptor?: (code: string) => void;

  constructor(
    private readonly dir: string,
    private readonly node: string,
    private readonly snapshot: () => HandlerSnapshot,
    private readonly log: Logger,
    private readonly delayMs = 20,
  ) {}

  schedule(): void {
    if (this.frozen || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.delayMs);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.frozen) return;
    const text = encodeState(this.node, this.snapshot());
    const file = path.join(this.dir, STATE_FILE);
    try {
      writeFileAtomic(file, text, 0o600);
      this.writes++;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (this.onNoDescriptor && isFdExhaustion(code)) {
        this.onNoDescriptor(code as string);
        if (!this.timer) {
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.flush();
          }, RETRY_MS);
          this.timer.unref();
        }
        return;
      }
      this.log.error({ err: e, file }, 'saving state failed (a restart would forget the running apps)');
    }
  }

  freeze(): void {
    this.flush();
    this.frozen = true;
  }
}
