// Compact binary codec of gossip messages: bounds-checked reader/writer, one framed record per message.
// Decoding never trusts a length: every read is checked and failures surface as DecodeError('truncated'|'malformed').

/** Why a decode failed. */
export type DecodeFailure = 'truncated' | 'malformed';

/** Thrown by {@link Reader} and the message decoders; caught at the packet boundary, never escapes it. */
export class DecodeError extends Error {
  constructor(readonly reason: DecodeFailure, message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Encodes a string as UTF-8. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

// Names, addresses and keys repeat endlessly on the wire: cache their encodings (bounded; cleared when full).
const SHORT_CACHE_MAX = 16_384;
const shortCache = new Map<string, Uint8Array>();

/** UTF-8 bytes of a short string, cached. The returned array must not be modified. */
function shortUtf8(s: string): Uint8Array {
  let b = shortCache.get(s);
  if (b === undefined) {
    b = utf8Encoder.encode(s);
    if (shortCache.size >= SHORT_CACHE_MAX) shortCache.clear();
    shortCache.set(s, b);
  }
  return b;
}

/** Growable output buffer. */
export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  get length(): number {
    return this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const nb = new Uint8Array(size);
    nb.set(this.buf.subarray(0, this.pos));
    this.buf = nb;
    this.view = new DataView(nb.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
  }

  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v);
    this.pos += 2;
  }

  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v >>> 0);
    this.pos += 4;
  }

  /** Unsigned 48-bit big-endian integer. */
  u48(v: number): void {
    this.ensure(6);
    const hi = Math.floor(v / 0x100000000);
    this.view.setUint16(this.pos, hi & 0xffff);
    this.view.setUint32(this.pos + 2, v >>> 0);
    this.pos += 6;
  }

  f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, v);
    this.pos += 8;
  }

  /** Unsigned LEB128, for integers in [0, 2^53). */
  varint(v: number): void {
    this.ensure(8);
    let x = v;
    while (x >= 0x80) {
      this.buf[this.pos++] = (x % 0x80) | 0x80;
      x = Math.floor(x / 0x80);
    }
    this.buf[this.pos++] = x;
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** String with a 1-byte length prefix (≤ 255 UTF-8 bytes; caller validated). */
  str8(s: string): void {
    const b = shortUtf8(s);
    if (b.length > 255) throw new RangeError('string longer than 255 bytes');
    this.u8(b.length);
    this.bytes(b);
  }

  /** Byte string with a varint length prefix. */
  blob(b: Uint8Array): void {
    this.varint(b.length);
    this.bytes(b);
  }

  /** Discards everything written after `length` bytes. */
  truncate(length: number): void {
    if (length < this.pos) this.pos = length;
  }

  /** The written bytes (a copy-free view of the internal buffer). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

/** Bounds-checked input cursor. */
export class Reader {
  private pos = 0;
  private lim: number;
  private readonly view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.lim = buf.length;
  }

  get remaining(): number {
    return this.lim - this.pos;
  }

  /** Restricts reads to the next `n` bytes (a nested record); returns the previous limit for {@link unlimit}. */
  limit(n: number): number {
    const prev = this.lim;
    this.need(n, 'record');
    this.lim = this.pos + n;
    return prev;
  }

  /** Asserts the nested record was consumed exactly and restores the outer limit. */
  unlimit(prev: number, what: string): void {
    if (this.pos !== this.lim) throw new DecodeError('malformed', `trailing bytes after ${what}`);
    this.lim = prev;
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.lim) throw new DecodeError('truncated', `truncated reading ${what}`);
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u48(what = 'u48'): number {
    this.need(6, what);
    const v = this.view.getUint16(this.pos) * 0x100000000 + this.view.getUint32(this.pos + 2);
    this.pos += 6;
    return v;
  }

  f64(what = 'f64'): number {
    this.need(8, what);
    const v = this.view.getFloat64(this.pos);
    this.pos += 8;
    return v;
  }

  varint(what = 'varint'): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8(what);
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) throw new DecodeError('malformed', `${what} out of range`);
        if (i > 0 && b === 0) throw new DecodeError('malformed', `${what} not minimally encoded`);
        return result;
      }
      mul *= 0x80;
    }
    throw new DecodeError('malformed', `${what} too long`);
  }

  bytes(n: number, what = 'bytes'): Uint8Array {
    this.need(n, what);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  str8(what = 'string'): string {
    const n = this.u8(what);
    return this.utf8(this.bytes(n, what), what);
  }

  /** Varint-prefixed byte string of at most `max` bytes (copied, so it can outlive the packet buffer). */
  blob(max: number, what = 'blob'): Uint8Array {
    const n = this.varint(what);
    if (n > max) throw new DecodeError('malformed', `${what} longer than ${max}`);
    return this.bytes(n, what).slice();
  }

  utf8(b: Uint8Array, what: string): string {
    try {
      return utf8Decoder.decode(b);
    } catch {
      throw new DecodeError('malformed', `${what} is not UTF-8`);
    }
  }

  /** Asserts every byte was consumed. */
  end(what: string): void {
    if (this.pos !== this.lim) throw new DecodeError('malformed', `trailing bytes after ${what}`);
  }

  /** The underlying bytes between two offsets (no copy). */
  span(from: number, to: number): Uint8Array {
    return this.buf.subarray(from, to);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Messages

/** Member states as carried on the wire and exposed in events. */
export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';
const STATE_CODES: readonly MemberState[] = ['alive', 'suspect', 'dead', 'left'];

/** Wire type codes (one byte). Never renumber: add new codes instead. */
export const MSG = {
  ping: 1,
  indirectPing: 2,
  ack: 3,
  nack: 4,
  alive: 5,
  suspect: 6,
  dead: 7,
  kv: 8,
  pushPull: 9,
} as const;

/** Name of a message type, used as the key of per-type counters. */
export type MessageKind = keyof typeof MSG;
/** All message kinds, in code order. */
export const MESSAGE_KINDS: readonly MessageKind[] = Object.keys(MSG) as MessageKind[];
const KIND_BY_CODE: Array<MessageKind | undefined> = [];
for (const k of MESSAGE_KINDS) KIND_BY_CODE[MSG[k]] = k;

/** Direct probe. `target` is the name the prober believes lives at the address ("" = any). */
export interface PingMsg {
  kind: 'ping';
  seq: number;
  target: string;
}
/** Ask the receiver to probe `target` at `targetAddr` on our behalf and relay the ack (and a nack on timeout). */
export interface IndirectPingMsg {
  kind: 'indirectPing';
  seq: number;
  target: string;
  targetAddr: string;
  wantNack: boolean;
}
/**
 * State digest: number of alive+suspect members, the XOR of their name hashes, and the XOR of hashes of every live
 * key version in the store.
 */
export interface Digest {
  count: number;
  hash: number;
  store: number;
}
/** Answer to a ping. A direct ack carries the responder's membership digest (relayed acks do not). */
export interface AckMsg {
  kind: 'ack';
  seq: number;
  digest?: Digest | undefined;
}
export interface NackMsg {
  kind: 'nack';
  seq: number;
}
/** `node` is alive at `incarnation`; `epoch` identifies its process (store epoch, ms). */
export interface AliveMsg {
  kind: 'alive';
  node: string;
  addr: string;
  incarnation: number;
  epoch: number;
}
export interface SuspectMsg {
  kind: 'suspect';
  node: string;
  incarnation: number;
  from: string;
}
/** `from === node` means the node left gracefully. */
export interface DeadMsg {
  kind: 'dead';
  node: string;
  incarnation: number;
  from: string;
}
/** One replicated key of `node`: `value === null` is a tombstone. */
export interface KvMsg {
  kind: 'kv';
  node: string;
  epoch: number;
  version: number;
  key: string;
  value: Uint8Array | null;
}
/** A member row of a push-pull exchange. */
export interface MemberRecord {
  name: string;
  addr: string;
  incarnation: number;
  state: MemberState;
  epoch: number;
}
/** One key row of a store section. */
export interface StoreEntryRecord {
  key: string;
  version: number;
  value: Uint8Array | null;
}
/** The store of one node in a push-pull exchange. */
export interface StoreRecord {
  node: string;
  epoch: number;
  entries: StoreEntryRecord[];
}
/** Full state exchange (stream channel only). */
export interface PushPullMsg {
  kind: 'pushPull';
  join: boolean;
  members: MemberRecord[];
  stores: StoreRecord[];
}

/** Any protocol message. */
export type Message =
  | PingMsg
  | IndirectPingMsg
  | AckMsg
  | NackMsg
  | AliveMsg
  | SuspectMsg
  | DeadMsg
  | KvMsg
  | PushPullMsg;

/** Decoder limits (from the configured caps). */
export interface DecodeLimits {
  maxValueBytes: number;
  maxMembers: number;
  maxKeysPerNode: number;
}

function writePayload(w: Writer, m: Message): void {
  switch (m.kind) {
    case 'ping':
      w.u32(m.seq);
      w.str8(m.target);
      return;
    case 'indirectPing':
      w.u32(m.seq);
      w.str8(m.target);
      w.str8(m.targetAddr);
      w.u8(m.wantNack ? 1 : 0);
      return;
    case 'ack':
      w.u32(m.seq);
      if (m.digest !== undefined) {
        w.varint(m.digest.count);
        w.u32(m.digest.hash);
        w.u32(m.digest.store);
      }
      return;
    case 'nack':
      w.u32(m.seq);
      return;
    case 'alive':
      w.str8(m.node);
      w.str8(m.addr);
      w.varint(m.incarnation);
      w.f64(m.epoch);
      return;
    case 'suspect':
    case 'dead':
      w.str8(m.node);
      w.varint(m.incarnation);
      w.str8(m.from);
      return;
    case 'kv':
      w.str8(m.node);
      w.f64(m.epoch);
      w.varint(m.version);
      w.str8(m.key);
      writeValue(w, m.value);
      return;
    case 'pushPull':
      w.u8(m.join ? 1 : 0);
      w.varint(m.members.length);
      for (const r of m.members) writeMemberRecord(w, r);
      w.varint(m.stores.length);
      for (const s of m.stores) writeStoreRecord(w, s);
      return;
  }
}

function writeValue(w: Writer, v: Uint8Array | null): void {
  if (v === null) {
    w.u8(0);
  } else {
    w.u8(1);
    w.blob(v);
  }
}

/** Encodes one member row (exported so push-pull can be assembled incrementally under a size budget). */
export function writeMemberRecord(w: Writer, r: MemberRecord): void {
  w.str8(r.name);
  w.str8(r.addr);
  w.varint(r.incarnation);
  w.u8(STATE_CODES.indexOf(r.state));
  w.f64(r.epoch);
}

/** Encodes one store section. */
export function writeStoreRecord(w: Writer, s: StoreRecord): void {
  w.str8(s.node);
  w.f64(s.epoch);
  w.varint(s.entries.length);
  for (const e of s.entries) {
    w.str8(e.key);
    w.varint(e.version);
    writeValue(w, e.value);
  }
}

/** Encodes a message as a standalone framed record: [type u8][length varint][payload]. */
export function encodeMessage(m: Message): Uint8Array {
  const body = new Writer(64);
  writePayload(body, m);
  const payload = body.finish();
  const w = new Writer(payload.length + 6);
  w.u8(MSG[m.kind]);
  w.varint(payload.length);
  w.bytes(payload);
  return w.finish().slice();
}

/** Frames an already encoded payload (used for push-pull assembled under a budget). */
export function frameMessage(kind: MessageKind, payload: Uint8Array): Uint8Array {
  const w = new Writer(payload.length + 6);
  w.u8(MSG[kind]);
  w.varint(payload.length);
  w.bytes(payload);
  return w.finish().slice();
}

const MAX_NAME = 255;

function readName(r: Reader, what: string): string {
  const s = r.str8(what);
  if (s.length === 0) throw new DecodeError('malformed', `empty ${what}`);
  return s;
}

function readEpoch(r: Reader): number {
  const e = r.f64('epoch');
  if (!Number.isSafeInteger(e) || e < 0) throw new DecodeError('malformed', 'bad epoch');
  return e;
}

function readValue(r: Reader, lim: DecodeLimits): Uint8Array | null {
  const flag = r.u8('value flag');
  if (flag === 0) return null;
  if (flag !== 1) throw new DecodeError('malformed', 'bad value flag');
  return r.blob(lim.maxValueBytes, 'value');
}

function readState(r: Reader): MemberState {
  const c = r.u8('state');
  const s = STATE_CODES[c];
  if (s === undefined) throw new DecodeError('malformed', 'bad member state');
  return s;
}

function readPayload(kind: MessageKind, r: Reader, lim: DecodeLimits): Message {
  switch (kind) {
    case 'ping':
      return { kind, seq: r.u32('seq'), target: r.str8('target') };
    case 'indirectPing': {
      const seq = r.u32('seq');
      const target = readName(r, 'target');
      const targetAddr = readName(r, 'target address');
      const f = r.u8('nack flag');
      if (f > 1) throw new DecodeError('malformed', 'bad nack flag');
      return { kind, seq, target, targetAddr, wantNack: f === 1 };
    }
    case 'ack': {
      const seq = r.u32('seq');
      if (r.remaining === 0) return { kind, seq };
      return {
        kind,
        seq,
        digest: { count: r.varint('digest count'), hash: r.u32('digest hash'), store: r.u32('digest store') },
      };
    }
    case 'nack':
      return { kind, seq: r.u32('seq') };
    case 'alive':
      return {
        kind,
        node: readName(r, 'node'),
        addr: readName(r, 'address'),
        incarnation: r.varint('incarnation'),
        epoch: readEpoch(r),
      };
    case 'suspect':
    case 'dead':
      return { kind, node: readName(r, 'node'), incarnation: r.varint('incarnation'), from: readName(r, 'from') };
    case 'kv':
      return {
        kind,
        node: readName(r, 'node'),
        epoch: readEpoch(r),
        version: r.varint('version'),
        key: readName(r, 'key'),
        value: readValue(r, lim),
      };
    case 'pushPull': {
      const jf = r.u8('join flag');
      if (jf > 1) throw new DecodeError('malformed', 'bad join flag');
      const nm = r.varint('member count');
      if (nm > lim.maxMembers) throw new DecodeError('malformed', 'too many members');
      // Each row is at least 12 bytes: refuse counts the buffer cannot hold before allocating.
      if (nm * 12 > r.remaining) throw new DecodeError('truncated', 'member rows');
      const members: MemberRecord[] = [];
      for (let i = 0; i < nm; i++) {
        members.push({
          name: readName(r, 'member name'),
          addr: readName(r, 'member address'),
          incarnation: r.varint('incarnation'),
          state: readState(r),
          epoch: readEpoch(r),
        });
      }
      const ns = r.varint('store count');
      if (ns > lim.maxMembers) throw new DecodeError('malformed', 'too many stores');
      if (ns * 10 > r.remaining) throw new DecodeError('truncated', 'store sections');
      const stores: StoreRecord[] = [];
      for (let i = 0; i < ns; i++) {
        const node = readName(r, 'store node');
        const epoch = readEpoch(r);
        const ne = r.varint('entry count');
        if (ne > lim.maxKeysPerNode) throw new DecodeError('malformed', 'too many keys');
        if (ne * 4 > r.remaining) throw new DecodeError('truncated', 'store entries');
        const entries: StoreEntryRecord[] = [];
        for (let j = 0; j < ne; j++) {
          entries.push({ key: readName(r, 'key'), version: r.varint('version'), value: readValue(r, lim) });
        }
        stores.push({ node, epoch, entries });
      }
      return { kind, join: jf === 1, members, stores };
    }
  }
}

/** Result of decoding a message list. */
export interface DecodedMessages {
  messages: Message[];
  /** The framed bytes of each message (views into the input), to re-broadcast without re-encoding. */
  raws: Uint8Array[];
  /** Records skipped because their type code is unknown to this version (forward compatibility). */
  unknown: number;
}

/** Decodes consecutive framed messages until the end of `body`. Throws DecodeError on any inconsistency. */
export function decodeMessages(body: Uint8Array, lim: DecodeLimits): DecodedMessages {
  const r = new Reader(body);
  const messages: Message[] = [];
  const raws: Uint8Array[] = [];
  let unknown = 0;
  while (r.remaining > 0) {
    const start = r.offset;
    const code = r.u8('type');
    const len = r.varint('length');
    const kind = KIND_BY_CODE[code];
    if (kind === undefined) {
      if (code === 0) throw new DecodeError('malformed', 'message type 0');
      r.bytes(len, 'payload');
      unknown++;
      continue;
    }
    const outer = r.limit(len);
    messages.push(readPayload(kind, r, lim));
    r.unlimit(outer, kind);
    raws.push(r.span(start, r.offset));
  }
  return { messages, raws, unknown };
}

/** Validates a node name, key or address-sized string: 1..255 UTF-8 bytes. */
export function validShortString(s: string): boolean {
  if (typeof s !== 'string' || s.length === 0) return false;
  if (s.length * 3 <= MAX_NAME) return true; // a UTF-16 unit never takes more than 3 UTF-8 bytes
  return utf8Encoder.encode(s).length <= MAX_NAME;
}

/** 32-bit FNV-1a of a string's UTF-16 units (for membership digests; not security relevant). */
export function nameHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
