import { decodeExposeList, type ExposeSpec } from '../gateway/exposures.js';

/** Apps under appswitch: what `appswitch run` declared (ip, name, tags) and what the daemon gave them. */

export interface AppMeta {
  ip?: string;
  name?: string;
  tags: Record<string, string>;
  cmd: string[];
  lb?: 'random' | 'round-robin' | 'least-conn' | 'p2c';
  /** false: this app's connections to same-host peers stay TCP (`appswitch run --no-fastpath`). */
  fastpath?: boolean;
  /** A generator whose daemon restarted asks for its app back with the ticket from its first HELLO reply. */
  resume?: string;
  /** With resume: the identity the program has been using (kept when the daemon lost its state). */
  identity?: string;
  /** The user on whose behalf root runs the program: `appswitch run` puts SUDO_UID here when started through sudo.
   * Taken only from a generator whose real uid is 0 (a member's setuid launcher is ignored); see AppRecord.owner. */
  owner?: number;
  /** The generator's offer socket (an abstract Unix datagram socket, named without its leading NUL): other
   * generators of the host hand it same-host fast-path connections directly (native/offer_chan.h). */
  offers?: string;
  /** `appswitch run --expose [HOSTPORT:]PORT` (repeatable): reached from outside through the gateway nodes. */
  expose?: ExposeSpec[];
}

export interface AppRecord extends AppMeta {
  id: string;
  /** The vip when --ip was given, else a link-local identity. */
  identity: string;
  launcherPid: number;
  /** The generator's real uid (/proc/PID/status: the user who ran `appswitch run`, also through the setuid
   * launcher; SO_PEERCRED's effective uid when the daemon did not say, as in unit tests). */
  uid: number;
  /** Who holds the app's vip and name on this node: AppMeta.owner when the generator's real uid is 0, else uid. Another
   * owner's HELLO for the same vip or name is refused. Absent in states saved before it existed (then uid). */
  owner?: number;
  pid?: number;
  startedAt: number;
  /** Secret half of the app's resume ticket ("<id>.<secret>"); never shown. */
  secret: string;
}

/** The ticket a generator presents to get its app back after a daemon restart. */
export const TICKET_RE = /^([0-9a-f]{8})\.([0-9a-f]{32})$/;

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const TAG_KEY_RE = /^[A-Za-z0-9_.\-/]{1,63}$/;
const TAG_VAL_RE = /^[A-Za-z0-9_.\-/:]{0,63}$/;

/** Parses "k=v" tags. Throws RangeError naming the bad tag. */
export function parseTags(list: string[]): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const t of list) {
    const i = t.indexOf('=');
    /* no '=' is a mistake (a forgotten value), not an empty value: that one is spelt KEY= */
    if (i < 0) throw new RangeError(`bad tag "${t}": expected KEY=VALUE (KEY= for an empty value)`);
    const k = t.slice(0, i);
    const v = t.slice(i + 1);
    if (!TAG_KEY_RE.test(k) || !TAG_VAL_RE.test(v)) throw new RangeError(`bad tag "${t}": expected KEY=VALUE`);
    tags[k] = v;
  }
  return tags;
}

export function isValidName(n: string): boolean {
  return n.length <= 253 && NAME_RE.test(n);
}

/** Validates HELLO metadata (untrusted JSON); returns an error text or the metadata. */
export function parseMeta(raw: Buffer): AppMeta | string {
  let v: unknown;
  try {
    v = JSON.parse(raw.length ? raw.toString('utf8') : '{}');
  } catch {
    return 'app metadata is not JSON';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'app metadata must be an object';
  const o = v as Record<string, unknown>;
  const meta: AppMeta = { tags: {}, cmd: [] };
  if (o.ip !== undefined) {
    if (typeof o.ip !== 'string') return '--ip must be a string';
    meta.ip = o.ip;
  }
  if (o.name !== undefined) {
    if (typeof o.name !== 'string' || !isValidName(o.name)) return `--name "${String(o.name)}" is not a valid DNS name`;
    meta.name = o.name.toLowerCase();
  }
  if (o.tags !== undefined) {
    if (typeof o.tags !== 'object' || o.tags === null || Array.isArray(o.tags)) return 'tags must be an object';
    for (const [k, val] of Object.entries(o.tags as Record<string, unknown>)) {
      if (typeof val !== 'string') return `tag ${k} must be a string`;
      try {
        Object.assign(meta.tags, parseTags([`${k}=${val}`]));
      } catch (e) {
        return (e as Error).message;
      }
    }
  }
  if (o.lb !== undefined) {
    if (o.lb !== 'random' && o.lb !== 'round-robin' && o.lb !== 'least-conn' && o.lb !== 'p2c') {
      return '--lb must be random, round-robin, least-conn or p2c';
    }
    meta.lb = o.lb;
  }
  if (o.fastpath !== undefined) {
    if (typeof o.fastpath !== 'boolean') return 'fastpath must be a boolean';
    meta.fastpath = o.fastpath;
  }
  if (o.resume !== undefined) {
    if (typeof o.resume !== 'string' || !TICKET_RE.test(o.resume)) return 'resume must be an app ticket';
    meta.resume = o.resume;
  }
  if (o.identity !== undefined) {
    if (typeof o.identity !== 'string' || o.identity.length > 45) return 'identity must be an address';
    meta.identity = o.identity;
  }
  if (o.owner !== undefined) {
    if (typeof o.owner !== 'number' || !Number.isInteger(o.owner) || o.owner < 0 || o.owner >= 0xffffffff) return 'owner must be a uid';
    meta.owner = o.owner;
  }
  if (o.offers !== undefined) {
    if (typeof o.offers !== 'string' || !/^appswitch-gen-[0-9a-f]{32}$/.test(o.offers)) return 'offers must be an offer socket name';
    meta.offers = o.offers;
  }
  if (o.expose !== undefined) {
    const x = decodeExposeList(o.expose);
    if (typeof x === 'string') return x;
    if (x.length) meta.expose = x;
  }
  if (o.cmd !== undefined) {
    if (!Array.isArray(o.cmd) || !o.cmd.every((c) => typeof c === 'string')) return 'cmd must be an array of strings';
    meta.cmd = o.cmd as string[];
  }
  return meta;
}
