/** The trap wire format: TypeScript offsets match native/proto.h as the C compiler lays it out. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_INET6,
  CLAIMED_ENTRY_SIZE,
  decodeMsg,
  decodeOutsideClaim,
  decodeRequest,
  decodeSockaddr,
  decodeTrapStats,
  encodeMsg,
  encodeSockaddr,
  encodeTrapStats,
  HEADER_SIZE,
  MsgFlag,
  MsgType,
  OFFSETS,
  PAYLOAD_MAX,
  PROTO_VERSION,
  type RequestOf,
  STATS_BOUNDS_NS,
  STATS_BUCKETS,
  STATS_COUNT_SIZE,
  STATS_ERRNO_MAX,
  STATS_HEAD_SIZE,
  STATS_HIST_SIZE,
  STATS_OTHER,
  TRAPPED_SYSCALLS,
  type TrapMsg,
  type TrapStatsDelta,
} from '../../src/trap/protocol.js';
import { Errno } from '../../src/errors.js';
import { ROOT } from '../helpers/hosts.js';

/** C statements printing the AS_STATS constants and layout, and the syscall numbers TRAPPED_SYSCALLS names. */
const STATS_PROBE =
  `{ static const unsigned long long b[] = AS_STATS_BOUNDS_NS; printf("bounds "); ` +
  `for (unsigned i = 0; i < sizeof(b) / sizeof(b[0]); i++) printf(i ? ",%llu" : "%llu", b[i]); printf("\\n"); }\n` +
  `printf("STATS %d\\n", AS_STATS);\nprintf("stats_head %zu\\n", sizeof(struct as_stats_head));\n` +
  `printf("stats_count %zu\\n", sizeof(struct as_stats_count));\nprintf("stats_hist %zu\\n", sizeof(struct as_stats_hist));\n` +
  `printf("count_err %zu\\n", offsetof(struct as_stats_count, err));\nprintf("count_count %zu\\n", offsetof(struct as_stats_count, count));\n` +
  `printf("hist_sum %zu\\n", offsetof(struct as_stats_hist, sum_ns));\nprintf("hist_buckets %zu\\n", offsetof(struct as_stats_hist, buckets));\n` +
  `printf("buckets %d\\n", AS_STATS_BUCKETS);\nprintf("other %u\\n", AS_STATS_OTHER);\nprintf("errno_max %d\\n", AS_STATS_ERRNO_MAX);\n` +
  Object.values(TRAPPED_SYSCALLS)
    .map((n) => `printf("nr_${n} %d\\n", __NR_${n});\n`)
    .join('');

describe('trap protocol', () => {
  it('has the same layout as struct as_msg in native/proto.h', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-proto-'));
    const src = path.join(dir, 'offsets.c');
    const fields = Object.keys(OFFSETS).map((k) => [k, k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] as const);
    writeFileSync(
      src,
      `#include <stdio.h>\n#include <stddef.h>\n#include <sys/syscall.h>\n#include "proto.h"\nint main(void){\n` +
        `printf("size %zu\\n", sizeof(struct as_msg));\n` +
        fields.map(([k, c]) => `printf("${k} %zu\\n", offsetof(struct as_msg, ${c}));`).join('\n') +
        `\nprintf("protoversion %d\\n", AS_PROTO_VERSION);\nprintf("LISTEN %d\\n", AS_LISTEN);\nprintf("STARTED %d\\n", AS_STARTED);\n` +
        `printf("OFFER %d\\n", AS_OFFER);\nprintf("CLAIMED %d\\n", AS_CLAIMED);\nprintf("UDP_FROM %d\\n", AS_UDP_FROM);\nprintf("UDP_WHO %d\\n", AS_UDP_WHO);\nprintf("F_UDP_PEER %u\\n", AS_F_UDP_PEER);\nprintf("F_NOWHERE %u\\n", AS_F_NOWHERE);\nprintf("F_OFFER %u\\n", AS_F_OFFER);\nprintf("F_OFFERED %u\\n", AS_F_OFFERED);\nprintf("F_FASTPATH %u\\n", AS_F_FASTPATH);\nprintf("F_V6ONLY %u\\n", AS_F_V6ONLY);\nprintf("F_EGRESS %u\\n", AS_F_EGRESS);\n` +
        STATS_PROBE +
        `return 0;}\n`,
    );
    const exe = path.join(dir, 'offsets');
    execFileSync('gcc', ['-I', path.join(ROOT, 'native'), '-o', exe, src]);
    const out = Object.fromEntries(
      execFileSync(exe)
        .toString()
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    expect(Number(out.size)).toBe(HEADER_SIZE);
    for (const [k] of fields) expect(Number(out[k]), k).toBe(OFFSETS[k as keyof typeof OFFSETS]);
    expect(Number(out.protoversion)).toBe(PROTO_VERSION);
    expect(Number(out.LISTEN)).toBe(MsgType.LISTEN);
    expect(Number(out.STARTED)).toBe(MsgType.STARTED);
    expect([out.OFFER, out.CLAIMED].map(Number)).toEqual([MsgType.OFFER, MsgType.CLAIMED]);
    expect([out.F_FASTPATH, out.F_OFFER, out.F_OFFERED, out.F_V6ONLY].map(Number)).toEqual([MsgFlag.FASTPATH, MsgFlag.OFFER, MsgFlag.OFFERED, MsgFlag.V6ONLY]);
    expect([out.UDP_FROM, out.UDP_WHO].map(Number)).toEqual([MsgType.UDP_FROM, MsgType.UDP_WHO]);
    expect([out.F_UDP_PEER, out.F_NOWHERE].map(Number)).toEqual([MsgFlag.UDP_PEER, MsgFlag.NOWHERE]);
    expect(Number(out.F_EGRESS)).toBe(MsgFlag.EGRESS);
    const bits = Object.values(MsgFlag);
    expect(bits.every((b) => b > 0 && (b & (b - 1)) === 0), 'every flag is one bit').toBe(true);
    expect(bits.reduce((a, b) => a | b, 0), 'no two flags share a bit').toBe(bits.reduce((a, b) => a + b, 0));
    // AS_STATS and its payload
    expect(Number(out.STATS)).toBe(MsgType.STATS);
    expect(Number(out.stats_head)).toBe(STATS_HEAD_SIZE);
    expect(Number(out.stats_count)).toBe(STATS_COUNT_SIZE);
    expect(Number(out.stats_hist)).toBe(STATS_HIST_SIZE);
    expect([out.count_err, out.count_count, out.hist_sum, out.hist_buckets].map(Number)).toEqual([2, 4, 8, 16]);
    expect(Number(out.buckets)).toBe(STATS_BUCKETS);
    expect(Number(out.other)).toBe(STATS_OTHER);
    expect(Number(out.errno_max)).toBe(STATS_ERRNO_MAX);
    expect(out.bounds?.split(',').map(Number)).toEqual(STATS_BOUNDS_NS);
    expect(STATS_BOUNDS_NS).toHaveLength(STATS_BUCKETS - 1);
    for (const [nr, name] of Object.entries(TRAPPED_SYSCALLS)) expect(Number(out[`nr_${name}`]), name).toBe(Number(nr));
  });

  it('round-trips a message', () => {
    const addr = encodeSockaddr({ ip: '10.0.0.5', port: 8000 });
    const buf = encodeMsg({ type: MsgType.CONNECT, seq: 77, result: -111, pid: 1234, arg: 1, cookie: 99n, addr, payload: Buffer.from('x') });
    const m = decodeMsg(buf);
    expect(m).toMatchObject({ type: MsgType.CONNECT, seq: 77, result: -111, pid: 1234, arg: 1, cookie: 99n });
    expect(decodeSockaddr(m!.addr)).toEqual({ ip: '10.0.0.5', port: 8000 });
    expect(m!.payload.toString()).toBe('x');
  });

  it('rejects short, wrong-version and inconsistent messages', () => {
    expect(decodeMsg(Buffer.alloc(10))).toBeUndefined();
    const ok = encodeMsg({ type: MsgType.BIND });
    const badVersion = Buffer.from(ok);
    badVersion.writeUInt16LE(9, OFFSETS.version);
    expect(decodeMsg(badVersion)).toBeUndefined();
    const badLen = Buffer.from(ok);
    badLen.writeUInt32LE(1000, OFFSETS.addrLen);
    expect(decodeMsg(badLen)).toBeUndefined();
    const badPayload = Buffer.from(ok);
    badPayload.writeUInt32LE(50, OFFSETS.payloadLen);
    expect(decodeMsg(badPayload)).toBeUndefined();
    expect(decodeMsg(Buffer.alloc(HEADER_SIZE, 0xff))).toBeUndefined();
  });

  it('encodes sockaddr_in and sockaddr_in6, mapping IPv4 into AF_INET6 when asked', () => {
    const v4 = encodeSockaddr({ ip: '192.0.2.1', port: 443 });
    expect(v4.length).toBe(16);
    expect(v4.readUInt16LE(0)).toBe(AF_INET);
    expect(v4.readUInt16BE(2)).toBe(443);
    const mapped = encodeSockaddr({ ip: '192.0.2.1', port: 443 }, AF_INET6);
    expect(mapped.length).toBe(28);
    expect(mapped.readUInt16LE(0)).toBe(AF_INET6);
    expect(decodeSockaddr(mapped)).toEqual({ ip: '192.0.2.1', port: 443 });
    expect(decodeSockaddr(encodeSockaddr({ ip: '2001:db8::1', port: 1 }))).toEqual({ ip: '2001:db8::1', port: 1 });
    expect(decodeSockaddr(Buffer.from([1, 0, 0, 0]))).toBeUndefined();
  });
});

describe('AS_STATS payload', () => {
  it('round-trips counts and histograms, and rejects lengths that do not add up', () => {
    const d: TrapStatsDelta = {
      counts: [
        { syscall: 42, errno: 0, count: 7 },
        { syscall: 42, errno: 111, count: 2 },
        { syscall: STATS_OTHER, errno: STATS_OTHER, count: 1 },
      ],
      latency: [{ syscall: 42, sumNs: 123456789, buckets: [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6] }],
    };
    const p = encodeTrapStats(d);
    expect(p.length).toBe(STATS_HEAD_SIZE + 3 * STATS_COUNT_SIZE + STATS_HIST_SIZE);
    expect(decodeTrapStats(p)).toEqual(d);
    expect(decodeTrapStats(encodeTrapStats({ counts: [], latency: [] }))).toEqual({ counts: [], latency: [] });
    expect(decodeTrapStats(p.subarray(0, p.length - 1))).toBeUndefined();
    expect(decodeTrapStats(Buffer.concat([p, Buffer.alloc(1)]))).toBeUndefined();
    expect(decodeTrapStats(Buffer.alloc(4))).toBeUndefined();
    const lying = Buffer.from(p);
    lying.writeUInt16LE(4, 0);
    expect(decodeTrapStats(lying)).toBeUndefined();
    // it travels as an ordinary message
    const m = decodeMsg(encodeMsg({ type: MsgType.STATS, payload: p }));
    expect(m?.type).toBe(MsgType.STATS);
    expect(decodeTrapStats(m!.payload)).toEqual(d);
  });

  it("the generator's counters (native/trapstats.c) reach the daemon whole, split over messages when they must be", () => {
    // a harness around the real trapstats.c: every (syscall, errno) pair gets a known count, more pairs than one
    // message holds; the socket calls are back-dated by 3 ms so their latency bucket is known
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-tstats-'));
    const src = path.join(dir, 'harness.c');
    writeFileSync(
      src,
      `#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "trapstats.h"
static struct as_tstats st;
int main(void) {
  static const int nrs[] = {${Object.keys(TRAPPED_SYSCALLS).join(', ')}, 999};
  uint64_t id = 1;
  for (unsigned i = 0; i < sizeof(nrs) / sizeof(nrs[0]); i++)
    for (int e = 0; e <= 140; e++)
      for (int k = 0; k <= e % 3; k++) {
        struct as_tmark m;
        as_tstats_begin(&m, id++, nrs[i]);
        if (nrs[i] == __NR_socket) m.t0_ns -= 3000000;
        as_tstats_end(&st, &m, e ? -e : (int64_t)5);
        as_tstats_end(&st, &m, -1); /* a second answer to the same mark is not counted */
      }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) return 1;
  int sz = 1 << 20;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  if (as_tstats_flush(&st, sv[0]) < 0) return 2;
  if (as_tstats_flush(&st, sv[0]) < 0) return 3; /* nothing left: sends nothing */
  close(sv[0]);
  static unsigned char buf[1 << 16];
  ssize_t n;
  while ((n = read(sv[1], buf, sizeof(buf))) > 0) {
    unsigned len = (unsigned)n;
    fwrite(&len, 4, 1, stdout);
    fwrite(buf, 1, len, stdout);
  }
  return 0;
}
`,
    );
    const exe = path.join(dir, 'harness');
    execFileSync('gcc', ['-O1', '-I', path.join(ROOT, 'native'), '-o', exe, src, path.join(ROOT, 'native/trapstats.c'), path.join(ROOT, 'native/scm_rights.c')]);
    const raw = execFileSync(exe);
    const msgs: Buffer[] = [];
    for (let o = 0; o < raw.length; ) {
      const len = raw.readUInt32LE(o);
      msgs.push(raw.subarray(o + 4, o + 4 + len));
      o += 4 + len;
    }
    expect(msgs.length).toBeGreaterThan(1);
    const counts = new Map<string, number>();
    const hist = new Map<number, { buckets: number[]; sumNs: number }>();
    for (const b of msgs) {
      expect(b.length).toBeLessThanOrEqual(HEADER_SIZE + PAYLOAD_MAX);
      const m = decodeMsg(b);
      expect(m?.type).toBe(MsgType.STATS);
      const d = decodeTrapStats(m!.payload);
      expect(d).toBeDefined();
      for (const c of d!.counts) {
        const k = `${c.syscall}/${c.errno}`;
        expect(counts.has(k), k).toBe(false); // each pair exactly once
        counts.set(k, c.count);
      }
      for (const h of d!.latency) {
        expect(hist.has(h.syscall)).toBe(false); // histograms travel once, with the first message
        hist.set(h.syscall, h);
      }
    }
    const nrs = [...Object.keys(TRAPPED_SYSCALLS).map(Number), STATS_OTHER];
    for (const nr of nrs) {
      let total = 0;
      for (let e = 0; e <= 140; e++) {
        const want = (e % 3) + 1;
        total += want;
        if (e >= STATS_ERRNO_MAX) continue; // these share the "other" counter
        expect(counts.get(`${nr}/${e}`), `${nr}/${e}`).toBe(want);
      }
      let other = 0;
      for (let e = STATS_ERRNO_MAX; e <= 140; e++) other += (e % 3) + 1;
      expect(counts.get(`${nr}/${STATS_OTHER}`)).toBe(other);
      const h = hist.get(nr);
      expect(h?.buckets.reduce((a, b) => a + b, 0)).toBe(total);
      if (TRAPPED_SYSCALLS[nr] === 'socket') {
        // 3 ms lies in (2.5 ms, 10 ms]
        expect(h?.buckets[STATS_BOUNDS_NS.indexOf(1e7)]).toBe(total);
        expect(h!.sumNs).toBeGreaterThanOrEqual(total * 3e6);
      }
    }
    expect(counts.size).toBe(nrs.length * (STATS_ERRNO_MAX + 1));
  });
});

describe('trap requests (decoded once, at the trap server)', () => {
  const msg = (m: Partial<TrapMsg> & { type: number }): TrapMsg => decodeMsg(encodeMsg(m)) as TrapMsg;
  const bad = Buffer.from([1, 0, 0, 0]); /* AF_UNIX: no inet address */

  it('answers an undecodable address as the handler always did; reports with one are dropped', () => {
    expect(decodeRequest(msg({ type: MsgType.BIND, addr: bad }))).toEqual({ kind: 'undecodable', errno: Errno.EAFNOSUPPORT });
    expect(decodeRequest(msg({ type: MsgType.CONNECT, addr: bad }))).toEqual({ kind: 'undecodable', errno: Errno.EAFNOSUPPORT });
    expect(decodeRequest(msg({ type: MsgType.ACCEPT, addr: bad }))).toEqual({ kind: 'undecodable', errno: Errno.ECONNREFUSED });
    expect(decodeRequest(msg({ type: MsgType.UDP_WHO }))).toEqual({ kind: 'undecodable', errno: Errno.EINVAL });
    for (const type of [MsgType.BOUND, MsgType.UNBOUND, MsgType.CONNECTED, MsgType.UDP_FROM]) {
      expect(decodeRequest(msg({ type, addr: bad }))).toEqual({ kind: 'undecodable' });
    }
    expect(decodeRequest(msg({ type: MsgType.OFFER }))).toEqual({ kind: 'unknown', type: MsgType.OFFER });
    expect(decodeRequest(msg({ type: 99 }))).toEqual({ kind: 'unknown', type: 99 });
  });

  it('decodes bind with the sockaddr family (a v4-mapped address is AF_INET6) and V6ONLY', () => {
    const r = decodeRequest(msg({ type: MsgType.BIND, seq: 4, arg: 2, flags: MsgFlag.V6ONLY | MsgFlag.RETRY, addr: encodeSockaddr({ ip: '0.0.0.0', port: 53 }, AF_INET6) }));
    expect(r).toEqual({ kind: 'bind', seq: 4, proto: 'udp', requested: { ip: '0.0.0.0', port: 53 }, family: 6, v6only: true, retry: true });
    const v4 = decodeRequest(msg({ type: MsgType.BIND, seq: 5, arg: 1, flags: MsgFlag.V6ONLY, addr: encodeSockaddr({ ip: '127.0.0.1', port: 80 }) }));
    expect(v4).toMatchObject({ kind: 'bind', proto: 'tcp', family: 4, v6only: false, retry: false });
  });

  it('decodes connect: the refusing instance of a retry, the placeholder port of an offer', () => {
    const dst = encodeSockaddr({ ip: '10.0.0.5', port: 80 });
    const other = encodeSockaddr({ ip: '192.0.2.1', port: 40001 });
    expect(decodeRequest(msg({ type: MsgType.CONNECT, seq: 1, arg: 1, addr: dst, addr2: other }))).toEqual({ kind: 'connect', seq: 1, proto: 'tcp', dst: { ip: '10.0.0.5', port: 80 }, retry: false });
    expect(decodeRequest(msg({ type: MsgType.CONNECT, seq: 1, arg: 1, flags: MsgFlag.RETRY, addr: dst, addr2: other }))).toMatchObject({ retry: true, retryFailed: { ip: '192.0.2.1', port: 40001 } });
    expect(decodeRequest(msg({ type: MsgType.CONNECT, seq: 1, arg: 1, flags: MsgFlag.OFFER, addr: dst, addr2: other }))).toMatchObject({ retry: false, offer: { port: 40001 } });
    expect(decodeRequest(msg({ type: MsgType.CONNECT, seq: 1, arg: 1, flags: MsgFlag.OFFER, addr: dst, addr2: bad }))).not.toHaveProperty('offer');
  });

  it('decodes an AS_CLAIMED batch: apps\' peers (IPv4 as ::ffff:a.b.c.d) and outside clients, skipping unknown kinds and a short tail', () => {
    const p = Buffer.alloc(4 * CLAIMED_ENTRY_SIZE + 5);
    const put = (i: number, at: number, ip: string, port: number): void => {
      encodeSockaddr({ ip, port }, AF_INET6).copy(p, i * CLAIMED_ENTRY_SIZE + at, 8, 24);
      p.writeUInt16BE(port, i * CLAIMED_ENTRY_SIZE + at + 16);
    };
    put(0, 0, '192.0.2.7', 40002);
    put(1, 0, '2001:db8::9', 1);
    put(2, 0, '192.0.2.3', 50000); /* relayed by the gateway 192.0.2.3 for 198.51.100.9:61000, to the instance's port 40100 */
    p[2 * CLAIMED_ENTRY_SIZE + 18] = 2;
    put(2, 20, '198.51.100.9', 61000);
    p.writeUInt16BE(40100, 2 * CLAIMED_ENTRY_SIZE + 38);
    put(3, 0, '192.0.2.4', 50001); /* an unknown kind */
    p[3 * CLAIMED_ENTRY_SIZE + 18] = 9;
    const r = decodeRequest(msg({ type: MsgType.CLAIMED, payload: p })) as RequestOf<'claimed'>;
    expect(r.kind).toBe('claimed');
    expect(r.peers).toEqual([{ ip: '192.0.2.7', port: 40002 }, { ip: '2001:db8::9', port: 1 }]);
    expect(r.outside).toMatchObject({ count: 1, steered: 0, relayed: 1 });
    expect(r.outside.entries.length).toBe(CLAIMED_ENTRY_SIZE);
    expect(decodeOutsideClaim(r.outside.entries, 0)).toEqual({ peer: { ip: '192.0.2.3', port: 50000 }, client: { ip: '198.51.100.9', port: 61000 }, how: 'relayed', localPort: 40100 });
  });

  it('an AS_CLAIMED batch keeps its outside claims as bytes, in order, across an app entry between them', () => {
    const p = Buffer.alloc(4 * CLAIMED_ENTRY_SIZE);
    const put = (i: number, at: number, ip: string, port: number): void => {
      encodeSockaddr({ ip, port }, AF_INET6).copy(p, i * CLAIMED_ENTRY_SIZE + at, 8, 24);
      p.writeUInt16BE(port, i * CLAIMED_ENTRY_SIZE + at + 16);
    };
    const kinds = [1, 0, 2, 1];
    for (const [i, k] of kinds.entries()) {
      put(i, 0, `192.0.2.${10 + i}`, 1000 + i);
      p[i * CLAIMED_ENTRY_SIZE + 18] = k;
      if (k) put(i, 20, `203.0.113.${i}`, 2000 + i);
    }
    const r = decodeRequest(msg({ type: MsgType.CLAIMED, payload: p })) as RequestOf<'claimed'>;
    expect(r.peers).toEqual([{ ip: '192.0.2.11', port: 1001 }]);
    expect(r.outside).toMatchObject({ count: 3, steered: 2, relayed: 1 });
    const got = [0, 1, 2].map((i) => decodeOutsideClaim(r.outside.entries, i));
    expect(got.map((c) => [c.peer.ip, c.client.port, c.how])).toEqual([
      ['192.0.2.10', 2000, 'steered'],
      ['192.0.2.12', 2002, 'relayed'],
      ['192.0.2.13', 2003, 'steered'],
    ]);
  });

  it('is the only decoding: no module of src/trap but the trap server imports the raw message or sockaddr decoding', () => {
    const dir = path.join(ROOT, 'src/trap');
    const raw = /\b(decodeMsg|decodeSockaddr|TrapMsg)\b/;
    const offenders: string[] = [];
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts') && n !== 'protocol.ts' && n !== 'server.ts')) {
      for (const m of readFileSync(path.join(dir, f), 'utf8').matchAll(/^\s*import\b([^;]*?)from\s+'([^']+)'/gm)) {
        if (raw.test(m[1] ?? '')) offenders.push(`${f}: ${m[2] ?? ''}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
