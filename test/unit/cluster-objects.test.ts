/** The cluster-object store (LWW, ties, tombstones, validation, bounds), its gossip record and its file. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AppswitchError } from '../../src/errors.js';
import { type ClusterObject, ClusterObjects, MAX_BODY_BYTES, MAX_OBJECTS, TOMBSTONE_TTL_MS } from '../../src/table/cluster-objects.js';
import { decodeObjectRecord, objectKey } from '../../src/daemon/gossip-records.js';
import { encodeObjects, loadObjects, OBJECTS_FILE, ObjectsWriter } from '../../src/daemon/objects-file.js';

/** A kind 'thing' whose body is { n: number }; anything else is refused. */
const validators = {
  thing: (b: unknown): unknown => (typeof b === 'object' && b !== null && typeof (b as { n?: unknown }).n === 'number' ? { n: (b as { n: number }).n } : 'n must be a number'),
  blob: (b: unknown): unknown => (typeof b === 'string' ? { s: b } : 'a string'),
};

function store(node: string, now: () => number = () => 1_000_000): ClusterObjects {
  return new ClusterObjects(node, { validators, now });
}

function obj(name: string, version: number, origin: string, body: unknown = { n: 1 }, deleted = false): ClusterObject {
  const o: ClusterObject = { kind: 'thing', name, version, origin, body: deleted ? null : body };
  if (deleted) o.deleted = true;
  return o;
}

describe('ClusterObjects', () => {
  it('put gives a version ≥ the clock, above every version seen; get and list see live objects only', () => {
    const s = store('a', () => 5000);
    const changed: ClusterObject[] = [];
    s.on('changed', (o) => changed.push(o));
    const p = s.put('thing', 'x', { n: 1, extra: 'dropped by the validator' });
    expect(p).toMatchObject({ kind: 'thing', name: 'x', origin: 'a', body: { n: 1 } });
    expect(p.version).toBeGreaterThanOrEqual(5000);
    expect(s.merge(obj('x', 9000, 'b', { n: 2 }))).toBe(true);
    expect(s.put('thing', 'x', { n: 3 }).version).toBeGreaterThan(9000);
    expect(s.get('thing', 'x')?.body).toEqual({ n: 3 });
    s.put('thing', 'w', { n: 0 });
    expect(s.list('thing').map((o) => o.name)).toEqual(['w', 'x']);
    expect(s.list('blob')).toEqual([]);
    expect(changed.length).toBe(4);
  });

  it('last writer wins: a higher version, else the greater origin; an equal or older copy loses', () => {
    const s = store('n');
    expect(s.merge(obj('x', 10, 'b', { n: 1 }))).toBe(true);
    expect(s.merge(obj('x', 9, 'z', { n: 2 }))).toBe(false);
    expect(s.merge(obj('x', 10, 'a', { n: 3 }))).toBe(false); /* tie, smaller origin */
    expect(s.merge(obj('x', 10, 'b', { n: 4 }))).toBe(false); /* the same copy again */
    expect(s.merge(obj('x', 10, 'c', { n: 5 }))).toBe(true); /* tie, greater origin */
    expect(s.get('thing', 'x')?.body).toEqual({ n: 5 });
    expect(s.merge(obj('x', 11, 'a', { n: 6 }))).toBe(true);
    expect(s.get('thing', 'x')).toMatchObject({ version: 11, origin: 'a', body: { n: 6 } });
  });

  it('two stores that exchange copies in any order converge', () => {
    const copies = [obj('x', 10, 'b', { n: 1 }), obj('x', 12, 'a', { n: 2 }), obj('x', 12, 'c', { n: 3 }), obj('x', 13, 'a', undefined, true), obj('x', 11, 'z', { n: 4 })];
    const a = store('p');
    const b = store('q');
    for (const o of copies) a.merge(o);
    for (const o of [...copies].reverse()) b.merge(o);
    expect(a.all()).toEqual(b.all());
    expect(a.get('thing', 'x')).toBeUndefined();
  });

  it('a tombstone beats older puts and loses to newer ones; delete of a missing object is undefined', () => {
    const s = store('a', () => 100);
    s.put('thing', 'x', { n: 1 });
    const t = s.delete('thing', 'x');
    expect(t).toMatchObject({ deleted: true, body: null, origin: 'a' });
    expect(s.get('thing', 'x')).toBeUndefined();
    expect(s.delete('thing', 'x')).toBeUndefined();
    expect(s.delete('thing', 'never')).toBeUndefined();
    expect(s.merge(obj('x', (t as ClusterObject).version - 1, 'z', { n: 9 }))).toBe(false); /* an older put stays dead */
    expect(s.get('thing', 'x')).toBeUndefined();
    expect(s.all().filter((o) => o.deleted).length).toBe(1);
    expect(s.merge(obj('x', (t as ClusterObject).version + 1, 'b', { n: 2 }))).toBe(true); /* re-created later */
    expect(s.get('thing', 'x')?.body).toEqual({ n: 2 });
    expect(s.merge(obj('y', 50, 'b', undefined, true))).toBe(true); /* a tombstone for an object never seen is kept */
    expect(s.merge(obj('y', 40, 'c', { n: 1 }))).toBe(false);
  });

  it('tombstones are dropped 24 h after their version; an expired tombstone still deletes an older live copy', () => {
    let now = 1_000_000;
    const s = store('a', () => now);
    const dropped: string[] = [];
    s.on('dropped', (o) => dropped.push(o.name));
    s.put('thing', 'x', { n: 1 });
    const t = s.delete('thing', 'x') as ClusterObject;
    now = t.version + TOMBSTONE_TTL_MS - 1;
    expect(s.expire()).toEqual([]);
    now = t.version + TOMBSTONE_TTL_MS;
    expect(s.expire().map((o) => o.name)).toEqual(['x']);
    expect(dropped).toEqual(['x']);
    expect(s.all()).toEqual([]);
    expect(s.merge(obj('x', t.version, 'a', undefined, true))).toBe(false); /* an expired copy is not kept again */
    expect(s.all()).toEqual([]);
    expect(s.merge(obj('y', 10, 'b', { n: 1 }))).toBe(true);
    expect(s.merge(obj('y', 11, 'b', undefined, true))).toBe(true); /* expired, but it beats the live copy */
    expect(s.get('thing', 'y')).toBeUndefined();
    expect(s.all()).toEqual([]);
  });

  it('drops invalid copies (counted, with why) and refuses invalid local writes', () => {
    const s = store('a');
    const refused: string[] = [];
    s.on('refused', (r) => refused.push(r.reason));
    expect(s.merge(obj('x', 10, 'b', { n: 'no' }))).toBe(false);
    expect(s.merge({ kind: 'nokind', name: 'x', version: 10, origin: 'b', body: {} })).toBe(false);
    expect(s.merge({ kind: 'BAD KIND', name: 'x', version: 10, origin: 'b', body: {} })).toBe(false);
    expect(s.merge(obj('a/b', 10, 'b'))).toBe(false);
    expect(s.merge(obj('', 10, 'b'))).toBe(false);
    expect(s.merge(obj('x'.repeat(201), 10, 'b'))).toBe(false);
    expect(s.merge(obj('x', -1, 'b'))).toBe(false);
    expect(s.merge(obj('x', 1.5, 'b'))).toBe(false);
    expect(s.merge(obj('x', 10, ''))).toBe(false);
    expect(s.merge({ ...obj('x', 10, 'b', undefined, true), body: { n: 1 } })).toBe(false);
    expect(s.merge({ ...obj('x', 10, 'b'), deleted: false as unknown as true })).toBe(false);
    expect(s.merge(null as unknown as ClusterObject)).toBe(false);
    expect(s.merge({ kind: 'blob', name: 'big', version: 10, origin: 'b', body: 'x'.repeat(MAX_BODY_BYTES) })).toBe(false);
    expect(s.merge({ kind: 'blob', name: 'fits', version: 10, origin: 'b', body: 'x'.repeat(MAX_BODY_BYTES - 2) })).toBe(true);
    expect(s.refused).toBe(13);
    expect(refused.length).toBe(13);
    expect(refused[0]).toBe('n must be a number');
    expect(s.all().map((o) => o.name)).toEqual(['fits']);
    expect(() => s.put('thing', 'x', { n: 'no' })).toThrow(AppswitchError);
    expect(() => s.put('thing', 'a/b', { n: 1 })).toThrow(/bad object name/);
    expect(() => s.put('nokind', 'x', {})).toThrow(/unknown object kind/);
    const throwing = new ClusterObjects('a', {
      validators: {
        t: () => {
          throw new Error('boom');
        },
      },
    });
    expect(throwing.merge({ kind: 't', name: 'x', version: 1, origin: 'b', body: {} })).toBe(false);
    expect(throwing.lastRefusal).toMatch(/boom/);
  });

  it(`holds at most ${MAX_OBJECTS} live objects and as many tombstones`, () => {
    const s = store('a');
    for (let i = 0; i < MAX_OBJECTS; i++) expect(s.merge(obj(`o${i}`, 10, 'b'))).toBe(true);
    expect(s.size).toBe(MAX_OBJECTS);
    expect(s.merge(obj('one-more', 10, 'b'))).toBe(false);
    expect(s.lastRefusal).toMatch(/over 10000 objects/);
    expect(() => s.put('thing', 'one-more', { n: 1 })).toThrow(expect.objectContaining({ code: 'ERR_RESOURCES' }));
    expect(s.put('thing', 'o1', { n: 2 }).body).toEqual({ n: 2 }); /* replacing one is fine */
    expect(s.merge(obj('o2', 11, 'b', undefined, true))).toBe(true);
    expect(s.put('thing', 'one-more', { n: 1 }).name).toBe('one-more'); /* room again */
    /* tombstones: the oldest go first past the cap */
    const t = store('a');
    const dropped: string[] = [];
    t.on('dropped', (o) => dropped.push(o.name));
    for (let i = 0; i <= MAX_OBJECTS; i++) t.merge(obj(`t${i}`, 100 + i, 'b', undefined, true));
    expect(t.all().length).toBe(MAX_OBJECTS);
    expect(dropped).toEqual(['t0']);
  });
});

describe('cluster object gossip record', () => {
  it('decodes a record whose kind and name match its key; refuses anything else', () => {
    const o = obj('x', 10, 'b', { n: 1 });
    const enc = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));
    expect(objectKey(o)).toBe('@obj/thing/x');
    expect(decodeObjectRecord('@obj/thing/x', enc(o))).toEqual({ ok: true, value: o });
    const t = obj('x', 11, 'b', undefined, true);
    expect(decodeObjectRecord('@obj/thing/x', enc(t))).toEqual({ ok: true, value: t });
    expect(decodeObjectRecord('@obj/thing/y', enc(o)).ok).toBe(false);
    expect(decodeObjectRecord('@obj/thing/x', Buffer.from('not json')).ok).toBe(false);
    expect(decodeObjectRecord('@obj/thing/x', enc({ ...o, version: 'x' })).ok).toBe(false);
    expect(decodeObjectRecord('@obj/thing/x', enc({ ...o, origin: 7 })).ok).toBe(false);
    expect(decodeObjectRecord('@obj/thing/x', enc({ ...o, deleted: 'yes' })).ok).toBe(false);
    expect(decodeObjectRecord('@obj/Thing/x', enc({ ...o, kind: 'Thing' })).ok).toBe(false);
  });
});

describe('objects.json', () => {
  const log = pino({ level: 'silent' });
  let dir = '';
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('round-trips objects and tombstones, written 0600; damaged lines lose only themselves', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'objects-'));
    const a = store('a');
    a.put('thing', 'x', { n: 1 });
    a.put('thing', 'y', { n: 2 });
    a.put('thing', 'z', { n: 3 });
    a.delete('thing', 'z');
    const w = new ObjectsWriter(dir, a, log);
    w.flush();
    const file = path.join(dir, OBJECTS_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const b = store('b');
    expect(loadObjects(dir, b, log)).toBe(3);
    expect(b.all()).toEqual(a.all());
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[1] = '{"kind":"thing","name":"x",'; /* cut */
    lines[2] = JSON.stringify({ ...JSON.parse(lines[2] as string), body: { n: 'bad' } });
    writeFileSync(file, lines.join('\n'));
    const c = store('c');
    expect(loadObjects(dir, c, log)).toBe(1);
    expect(c.all().map((o) => o.name)).toEqual(['z']);
    expect(loadObjects(path.join(dir, 'missing'), store('d'), log)).toBe(0);
    expect(encodeObjects([]).split('\n')[0]).toMatch(/"format":1/);
  });
});
