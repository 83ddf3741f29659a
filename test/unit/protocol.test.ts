/** The trap wire format: TypeScript offsets match native/proto.h as the C compiler lays it out. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_INET6,
  decodeMsg,
  decodeSockaddr,
  encodeMsg,
  encodeSockaddr,
  HEADER_SIZE,
  MsgType,
  OFFSETS,
  PROTO_VERSION,
} from '../../src/trap/protocol.js';
import { ROOT } from '../helpers/hosts.js';

describe('trap protocol', () => {
  it('has the same layout as struct as_msg in native/proto.h', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-proto-'));
    const src = path.join(dir, 'offsets.c');
    const fields = Object.keys(OFFSETS).map((k) => [k, k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] as const);
    writeFileSync(
      src,
      `#include <stdio.h>\n#include <stddef.h>\n#include "proto.h"\nint main(void){\n` +
        `printf("size %zu\\n", sizeof(struct as_msg));\n` +
        fields.map(([k, c]) => `printf("${k} %zu\\n", offsetof(struct as_msg, ${c}));`).join('\n') +
        `\nprintf("protoversion %d\\n", AS_PROTO_VERSION);\nprintf("LISTEN %d\\n", AS_LISTEN);\nprintf("STARTED %d\\n", AS_STARTED);\nreturn 0;}\n`,
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
