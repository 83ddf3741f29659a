/** The cluster-object store: objects that belong to the cluster, not to one node (virtual services, exposures),
 * keyed by (kind, name). Every node keeps a full copy and the copies converge by last-writer-wins: the higher
 * `version` wins, a tie goes to the greater `origin` (node name). A delete is a tombstone (a newer version with
 * `deleted: true`), kept TOMBSTONE_TTL_MS after its version's time and then dropped. Bodies are validated per kind
 * at the boundary (merge, put) by a registry of validators; an invalid copy is refused (the caller counts and logs
 * it). Pure: no I/O (the clock is injected); replication is daemon/cluster.ts, persistence daemon/objects-file.ts. */
import { EventEmitter } from 'node:events';
import { AppswitchError } from '../errors.js';

/** One object, live or a tombstone. `body` is the kind's validated value (null on a tombstone). */
export interface ClusterObject {
  kind: string;
  name: string;
  /** The writer's version counter (≥ its Date.now() when written). */
  version: number;
  /** The node that wrote this version. */
  origin: string;
  deleted?: true;
  body: unknown;
}

/** Validates (and may normalise) a body of one kind: the value to keep, or a string saying why it is refused. */
export type Validator = (body: unknown) => unknown;

/** Live objects kept at most (a put past it is ERR_LIMIT, a merge past it is refused). Tombstones: as many again. */
export const MAX_OBJECTS = 10_000;
/** Largest body, as JSON text (UTF-8 bytes). */
export const MAX_BODY_BYTES = 8 * 1024;
/** How long a tombstone is kept after its version's time. */
export const TOMBSTONE_TTL_MS = 24 * 60 * 60 * 1000;
/** Longest object name (the gossip key `@obj/<kind>/<name>` must stay under the gossip store's 255-byte key cap). */
export const MAX_OBJECT_NAME = 200;

const KIND_RE = /^[a-z][a-z0-9-]{0,31}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f/]/;

/** A merge that was refused: the copy is dropped (see ClusterObjects 'refused'). */
export interface RefusedObject {
  kind: string;
  name: string;
  origin: string;
  reason: string;
}

export interface ClusterObjectsEvents {
  /** A put, a delete, or a merge that won (the new copy, live or tombstone). */
  changed: [ClusterObject];
  /** A tombstone dropped after its time (expire) or to make room: nobody needs to publish it any more. */
  dropped: [ClusterObject];
  /** A copy refused by merge (invalid, unknown kind, over a bound). */
  refused: [RefusedObject];
}

export interface ClusterObjectsOptions {
  /** Body validators by kind; a kind without one cannot be stored. More with register(). */
  validators?: Record<string, Validator>;
  /** The clock (ms since the epoch); Date.now by default. */
  now?: () => number;
}

/** Why a kind or a name cannot key an object (undefined: it can). */
export function badObjectKey(kind: unknown, name: unknown): string | undefined {
  if (typeof kind !== 'string' || !KIND_RE.test(kind)) return `bad object kind ${JSON.stringify(kind)}`;
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > MAX_OBJECT_NAME || CONTROL_RE.test(name)) return `bad object name ${JSON.stringify(name)}`;
  return undefined;
}

/** Size of a body as JSON text (Infinity when it cannot be encoded). */
function bodyBytes(body: unknown): number {
  try {
    const s = JSON.stringify(body);
    return s === undefined ? Infinity : Buffer.byteLength(s);
  } catch {
    return Infinity;
  }
}

const keyOf = (kind: string, name: string): string => `${kind}/${name}`;

/** Whether copy a beats copy b (LWW: version, then origin). */
export function newer(a: Pick<ClusterObject, 'version' | 'origin'>, b: Pick<ClusterObject, 'version' | 'origin'>): boolean {
  return a.version > b.version || (a.version === b.version && a.origin > b.origin);
}

export class ClusterObjects extends EventEmitter<ClusterObjectsEvents> {
  private readonly objects = new Map<string, ClusterObject>();
  private readonly validators = new Map<string, Validator>();
  private readonly now: () => number;
  private version = 0;
  private live = 0;
  /** Copies refused by merge so far, and why the last one was. */
  refused = 0;
  lastRefusal: string | undefined;

  constructor(
    readonly nodeName: string,
    opts: ClusterObjectsOptions = {},
  ) {
    super();
    this.now = opts.now ?? Date.now;
    for (const [k, v] of Object.entries(opts.validators ?? {})) this.register(k, v);
  }

  /** Adds the validator of a kind. */
  register(kind: string, validator: Validator): void {
    const bad = badObjectKey(kind, 'x');
    if (bad) throw new AppswitchError('ERR_BAD_ARGUMENT', bad);
    this.validators.set(kind, validator);
  }

  /** The next version for a write of this node: above every version it has seen of that object and ≥ the clock. */
  private nextVersion(above = 0): number {
    this.version = Math.max(this.version + 1, this.now(), above + 1);
    return this.version;
  }

  /** Checks a body of a kind: the value to keep, or why not. */
  private check(kind: string, body: unknown): { ok: true; body: unknown } | { ok: false; reason: string } {
    const v = this.validators.get(kind);
    if (!v) return { ok: false, reason: `unknown object kind ${kind}` };
    if (bodyBytes(body) > MAX_BODY_BYTES) return { ok: false, reason: `body over ${MAX_BODY_BYTES} bytes` };
    let out: unknown;
    try {
      out = v(body);
    } catch (e) {
      return { ok: false, reason: `invalid body: ${(e as Error).message}` };
    }
    if (typeof out === 'string') return { ok: false, reason: out };
    return { ok: true, body: out };
  }

  /** A local write: a new version of (kind, name) with this body, which must pass the kind's validator.
   * @throws AppswitchError ERR_BAD_ARGUMENT (bad key or body), ERR_RESOURCES (MAX_OBJECTS live objects) */
  put(kind: string, name: string, body: unknown): ClusterObject {
    const bad = badObjectKey(kind, name);
    if (bad) throw new AppswitchError('ERR_BAD_ARGUMENT', bad);
    const c = this.check(kind, body);
    if (!c.ok) throw new AppswitchError('ERR_BAD_ARGUMENT', `${kind} ${name}: ${c.reason}`);
    const old = this.objects.get(keyOf(kind, name));
    if ((!old || old.deleted) && this.live >= MAX_OBJECTS) throw new AppswitchError('ERR_RESOURCES', `the cluster holds ${MAX_OBJECTS} objects already`);
    const o: ClusterObject = { kind, name, version: this.nextVersion(old?.version), origin: this.nodeName, body: c.body };
    this.store(o, old);
    this.emit('changed', o);
    return o;
  }

  /** A local delete: a tombstone newer than the live object; undefined when there is no live object. */
  delete(kind: string, name: string): ClusterObject | undefined {
    const old = this.objects.get(keyOf(kind, name));
    if (!old || old.deleted) return undefined;
    const t: ClusterObject = { kind, name, version: this.nextVersion(old.version), origin: this.nodeName, deleted: true, body: null };
    this.store(t, old);
    this.emit('changed', t);
    return t;
  }

  /** A live object. */
  get(kind: string, name: string): ClusterObject | undefined {
    const o = this.objects.get(keyOf(kind, name));
    return o && !o.deleted ? o : undefined;
  }

  /** The live objects of a kind, by name. */
  list(kind: string): ClusterObject[] {
    const out: ClusterObject[] = [];
    for (const o of this.objects.values()) if (o.kind === kind && !o.deleted) out.push(o);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Live objects and tombstones (what a node publishes and saves). */
  all(): ClusterObject[] {
    return [...this.objects.values()];
  }

  /** Live objects kept. */
  get size(): number {
    return this.live;
  }

  /** Takes a copy from a peer or the saved file when it beats ours; true if it won (then 'changed' is emitted). An
   * invalid copy (bad key, unknown kind, body refused by the kind's validator or too large, a tombstone with a body,
   * over MAX_OBJECTS) is dropped: 'refused' is emitted and false returned. A tombstone past its time is not kept,
   * but still removes the older live copy it beats. */
  merge(o: ClusterObject): boolean {
    const origin = typeof o?.origin === 'string' ? o.origin : '?';
    const refuse = (reason: string): boolean => {
      this.refused++;
      this.lastRefusal = reason;
      this.emit('refused', { kind: String(o?.kind), name: String(o?.name), origin, reason });
      return false;
    };
    if (typeof o !== 'object' || o === null) return refuse('not an object');
    const bad = badObjectKey(o.kind, o.name);
    if (bad) return refuse(bad);
    if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version) || o.version <= 0) return refuse('bad version');
    if (typeof o.origin !== 'string' || o.origin.length === 0 || o.origin.length > 255) return refuse('bad origin');
    if (o.deleted !== undefined && o.deleted !== true) return refuse('bad deleted flag');
    const old = this.objects.get(keyOf(o.kind, o.name));
    if (old && !newer(o, old)) return false;
    if (o.deleted) {
      if (o.body !== null && o.body !== undefined) return refuse('a tombstone carries no body');
      const t: ClusterObject = { kind: o.kind, name: o.name, version: o.version, origin: o.origin, deleted: true, body: null };
      if (this.now() - o.version >= TOMBSTONE_TTL_MS) {
        if (!old) return false; /* expired, and nothing to delete */
        this.unstore(old);
        if (!old.deleted) this.emit('changed', t);
        this.emit('dropped', t);
        return !old.deleted;
      }
      this.store(t, old);
      this.emit('changed', t);
      return true;
    }
    const c = this.check(o.kind, o.body);
    if (!c.ok) return refuse(c.reason);
    if ((!old || old.deleted) && this.live >= MAX_OBJECTS) return refuse(`over ${MAX_OBJECTS} objects`);
    const v: ClusterObject = { kind: o.kind, name: o.name, version: o.version, origin: o.origin, body: c.body };
    this.store(v, old);
    this.version = Math.max(this.version, Math.min(o.version, this.now() + TOMBSTONE_TTL_MS)); /* our next write beats it (a far-future version is not followed) */
    this.emit('changed', v);
    return true;
  }

  /** Drops tombstones past TOMBSTONE_TTL_MS ('dropped' for each); returns them. Call it now and then. */
  expire(): ClusterObject[] {
    const t = this.now();
    const gone: ClusterObject[] = [];
    for (const o of this.objects.values()) if (o.deleted && t - o.version >= TOMBSTONE_TTL_MS) gone.push(o);
    for (const o of gone) {
      this.unstore(o);
      this.emit('dropped', o);
    }
    return gone;
  }

  private store(o: ClusterObject, old: ClusterObject | undefined): void {
    if (old) this.unstore(old);
    this.objects.set(keyOf(o.kind, o.name), o);
    if (!o.deleted) this.live++;
    else this.capTombstones();
  }

  private unstore(o: ClusterObject): void {
    if (this.objects.delete(keyOf(o.kind, o.name)) && !o.deleted) this.live--;
  }

  /** At most MAX_OBJECTS tombstones: the oldest go first. */
  private capTombstones(): void {
    const dead = this.objects.size - this.live;
    if (dead <= MAX_OBJECTS) return;
    const ts = [...this.objects.values()].filter((o) => o.deleted).sort((a, b) => a.version - b.version);
    for (const o of ts.slice(0, dead - MAX_OBJECTS)) {
      this.unstore(o);
      this.emit('dropped', o);
    }
  }
}
