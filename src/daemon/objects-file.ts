/** The cluster objects saved on this node (`<state-dir>/objects.json`, mode 0600): virtual services and the other
 * cluster-scoped objects (table/cluster-objects.ts), so that a node that restarts, or a whole cluster that restarts,
 * keeps them. It is configuration, not runtime state: `appswitch daemon --clean` does not delete it.
 *
 * JSON lines: a header `{"format":1,"kind":"appswitch-objects","savedAt":...}`, then one object (or tombstone) per
 * line. Each line goes through ClusterObjects.merge, so a damaged line (or an invalid body) loses only that record,
 * with a warning. Written atomically (temporary file + fsync + rename) shortly after each change. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import type { Logger } from 'pino';
import type { ClusterObject, ClusterObjects } from '../table/cluster-objects.js';

export const OBJECTS_FILE = 'objects.json';
const FORMAT = 1;
const MAGIC = 'appswitch-objects';

/** The file's text. */
export function encodeObjects(objects: readonly ClusterObject[], savedAt = new Date()): string {
  const out = [JSON.stringify({ format: FORMAT, kind: MAGIC, savedAt: savedAt.toISOString() })];
  for (const o of objects) out.push(JSON.stringify(o));
  return `${out.join('\n')}\n`;
}

/** Merges the saved objects into `into` (before gossip starts). A missing file is nothing; an unreadable header is
 * logged and the file left as it is (it is overwritten on the next change); damaged records are skipped with one
 * warning. Returns how many records were taken. */
export function loadObjects(dir: string, into: ClusterObjects, log: Logger): number {
  const file = path.join(dir, OBJECTS_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: e, file }, 'saved cluster objects unreadable: starting without them (the cluster may still have them)');
    return 0;
  }
  const lines = text.split('\n');
  let header: unknown;
  try {
    header = JSON.parse(lines[0] ?? '');
  } catch {
    header = undefined;
  }
  const h = header as { format?: unknown; kind?: unknown } | undefined;
  if (typeof h !== 'object' || h === null || h.kind !== MAGIC || h.format !== FORMAT) {
    log.warn({ file }, 'saved cluster objects: not an objects file of this format; header skipped, records read anyway');
  }
  let taken = 0;
  let dropped = 0;
  const before = into.refused;
  for (let i = 1; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (!line) continue;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      dropped++;
      continue;
    }
    if (into.merge(o as ClusterObject)) taken++;
  }
  dropped += into.refused - before;
  if (dropped) log.warn({ file, dropped, taken }, 'saved cluster objects damaged: unreadable records skipped, the rest restored');
  return taken;
}

/** Saves the objects: `schedule()` coalesces a burst of changes into one write a few ms later; `flush()` writes now. */
export class ObjectsWriter {
  private timer: NodeJS.Timeout | undefined;
  writes = 0;

  constructor(
    private readonly dir: string,
    private readonly objects: ClusterObjects,
    private readonly log: Logger,
    private readonly delayMs = 20,
  ) {}

  schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.delayMs);
    this.timer.unref();
  }

  /** Writes now if a write is scheduled (a stopping daemon). */
  flushPending(): void {
    if (this.timer) this.flush();
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const file = path.join(this.dir, OBJECTS_FILE);
    try {
      writeFileAtomic(file, encodeObjects(this.objects.all()), 0o600);
      this.writes++;
    } catch (e) {
      this.log.error({ err: e, file }, 'saving the cluster objects failed (this node would start without them; the cluster keeps them)');
    }
  }
}
