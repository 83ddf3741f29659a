// Validation of what other nodes publish in gossip (src/daemon/gossip-records.ts): service entries must point at
// their node's own address and pool; app identities must be vips or link-local identities.
import { describe, expect, it } from 'vitest';
import { decodeNodeRecord, decodeRemoteApp, decodeRemoteEntry, type NodeContext } from '../../src/daemon/gossip-records.js';
import { VirtualRanges } from '../../src/table/addresses.js';

const ranges = new VirtualRanges(['10.0.0.0/8']);
const enc = (o: unknown): Uint8Array => Buffer.from(JSON.stringify(o));
const ctx: NodeContext = { address: '192.0.2.3', record: { ports: { low: 45000, high: 45100 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53 }, ranges };
const entry = (ip: string, port: number, over: Record<string, unknown> = {}): Uint8Array =>
  enc({ id: 'n3/a/1', vip: '10.0.0.40', port: 8000, proto: 'tcp', node: 'n3', endpoint: { ip, port }, appId: 'a', tags: { team: 'a', bad: 1 }, version: 1, ...over });

describe('remote service entries', () => {
  it('an entry at its node address and inside its pool is accepted (tags that are not strings dropped)', () => {
    const r = decodeRemoteEntry('n3', 'n3/a/1', entry('192.0.2.3', 45001), ctx);
    expect(r).toEqual({ ok: true, value: expect.objectContaining({ vip: '10.0.0.40', endpoint: { ip: '192.0.2.3', port: 45001 }, tags: { team: 'a' } }) });
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('::ffff:192.0.2.3', 45001), ctx).ok).toBe(true);
  });

  it.each([
    ['loopback', '127.0.0.1', 45001, /loopback/],
    ['loopback v6', '::1', 45001, /loopback/],
    ['unspecified', '0.0.0.0', 45001, /unspecified/],
    ['link-local', '169.254.7.7', 45001, /link-local/],
    ['link-local v6', 'fe80::1', 45001, /link-local/],
    ['multicast', '224.0.0.1', 45001, /multicast/],
    ['a vip', '10.0.0.5', 45001, /virtual/],
    ['another node', '192.0.2.1', 45001, /not the address of node n3/],
    ['below the pool', '192.0.2.3', 80, /outside the node's pool/],
    ['above the pool', '192.0.2.3', 45101, /outside the node's pool/],
    ['not an IP', 'example.com', 45001, /not an IP/],
  ])('refuses an endpoint: %s', (_what, ip, port, reason) => {
    const r = decodeRemoteEntry('n3', 'n3/a/1', entry(ip, port), ctx);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.wait).toBe(false);
      expect(r.reason).toMatch(reason);
    }
  });

  it('refuses a daemon port inside the pool, a vip outside the ranges, an id of another node, and junk', () => {
    const withDns = { ...ctx, record: { ...ctx.record!, dnsPort: 45050 } };
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('192.0.2.3', 45050), withDns)).toMatchObject({ ok: false, reason: /daemon port/ });
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('192.0.2.3', 45001, { vip: '8.8.8.8' }), ctx)).toMatchObject({ ok: false, reason: /outside this node's virtual ranges/ });
    expect(decodeRemoteEntry('n3', 'n1/a/1', entry('192.0.2.3', 45001, { id: 'n1/a/1' }), ctx)).toMatchObject({ ok: false, reason: /not a key of its node/ });
    for (const junk of ['', 'null', '[]', '{"vip":1}', '{'].map((t) => Buffer.from(t))) expect(decodeRemoteEntry('n3', 'n3/a/1', junk, ctx).ok).toBe(false);
  });

  it('waits while the node has no known address or no @node record', () => {
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('192.0.2.3', 45001), { ...ctx, address: undefined })).toMatchObject({ ok: false, wait: true });
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('192.0.2.3', 45001), { ...ctx, record: undefined })).toMatchObject({ ok: false, wait: true });
    // but what is wrong whatever the record says is refused at once
    expect(decodeRemoteEntry('n3', 'n3/a/1', entry('127.0.0.1', 45001), { ...ctx, record: undefined })).toMatchObject({ ok: false, wait: false });
  });
});

describe('node records', () => {
  it('decodes a record and refuses a bad one', () => {
    expect(decodeNodeRecord(enc({ ports: { low: 1, high: 2 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53, metricsPort: 9464 }))).toMatchObject({ ok: true });
    expect(decodeNodeRecord(enc({ ports: { low: 3, high: 2 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53 })).ok).toBe(false);
    expect(decodeNodeRecord(enc({ ports: { low: 1, high: 2 }, gossipPort: 0, peerPort: 7947, dnsPort: 53 })).ok).toBe(false);
    expect(decodeNodeRecord(Buffer.from('nope')).ok).toBe(false);
  });
});

describe('remote app records', () => {
  const app = (identity: string, vip: boolean): Uint8Array => enc({ id: 'x', node: 'n3', identity, vip, tags: {} });
  const none = (): boolean => false;
  it('accepts a vip inside --vip-cidr and a link-local identity', () => {
    expect(decodeRemoteApp('n3', '@app/x', app('10.0.0.40', true), ranges, none).ok).toBe(true);
    expect(decodeRemoteApp('n3', '@app/x', app('169.254.3.4', false), ranges, none).ok).toBe(true);
  });
  it.each([
    ['a loopback vip', '127.0.0.1', true],
    ['a node address as vip', '192.0.2.1', true],
    ['a node address as identity', '192.0.2.1', false],
    ['the metadata address', '169.254.169.254', false],
    ['a vip as link-local identity', '10.0.0.40', false],
  ])('refuses %s', (_w, identity, vip) => {
    expect(decodeRemoteApp('n3', '@app/x', app(identity, vip), ranges, none).ok).toBe(false);
  });
  it('refuses a link-local identity an app of this node holds', () => {
    expect(decodeRemoteApp('n3', '@app/x', app('169.254.3.4', false), ranges, (ip) => ip === '169.254.3.4')).toMatchObject({ ok: false, reason: /held by an app of this node/ });
  });
});
