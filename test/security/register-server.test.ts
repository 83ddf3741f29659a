/** The trap server's admission and its handling of bad input, in process (a TrapServer on a socket in a temp dir,
 * driven through real SOCK_SEQPACKET connections). The daemon always gives the server its admission check (only
 * real generators get past it, see register.test.ts); here one server admits everyone, so the malformed-message
 * paths that only an admitted generator can reach stay covered, and one refuses everyone, so a refused peer is shown
 * to be answered without its messages being parsed. No flag or variable of the daemon is involved. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type ProcessFacts, readProcess } from '../../src/daemon/access.js';
import { native } from '../../src/native/binding.js';
import { ServiceTable } from '../../src/table/service-table.js';
import { TrapHandler } from '../../src/trap/handler.js';
import { decodeMsg, encodeMsg, MsgType } from '../../src/trap/protocol.js';
import { type TrapPeer, TrapServer } from '../../src/trap/server.js';
import { waitFor } from '../helpers/hosts.js';
import { handlerConfig } from '../helpers/handler-config.js';

let dir: string | undefined;
let server: TrapServer | undefined;
const fds: number[] = [];

afterEach(() => {
  for (const fd of fds.splice(0)) native.close(fd);
  server?.close();
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function start(admit?: (p: TrapPeer) => string | undefined): { s: TrapServer; sock: string; lines: string[]; handler: TrapHandler } {
  dir = mkdtempSync(path.join(tmpdir(), 'appswitch-trapsrv-'));
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => lines.push(l) });
  const handler = new TrapHandler(handlerConfig(new ServiceTable(), { log }));
  const s = new TrapServer(handler, log, undefined, admit);
  const sock = path.join(dir, 'trap.sock');
  s.listen(sock);
  server = s;
  return { s, sock, lines, handler };
}

function connect(sock: string): number {
  const fd = native.seqpacketConnect(sock);
  fds.push(fd);
  return fd;
}

async function reply(fd: number): Promise<{ result: number; text: string }> {
  const r = await waitFor(() => native.recv(fd), 5000, 10);
  const m = r ? decodeMsg(r.data) : undefined;
  if (!m) throw new Error('undecodable reply');
  return { result: m.result, text: m.payload.toString() };
}

describe('an admitted generator that sends garbage', () => {
  it('loses only the bad messages (malformed, oversized, before HELLO); the server keeps serving', async () => {
    const { s, sock, lines, handler } = start();
    const a = connect(sock);
    native.send(a, Buffer.from('garbage'));
    native.send(a, Buffer.alloc(112, 0xff));
    await waitFor(() => s.badMessages >= 2);
    expect(lines.join('')).toContain('malformed trap message dropped');
    native.send(a, encodeMsg({ type: MsgType.BIND, seq: 1, result: 0 }));
    await waitFor(() => lines.join('').includes('trap message before HELLO'));
    const b = connect(sock);
    native.send(b, encodeMsg({ type: MsgType.HELLO, seq: 1, result: 0, payload: Buffer.from('{"ip":"10.0.0.9","cmd":["x"]}') }));
    const r = await reply(b);
    expect(r.result).toBe(0);
    expect([...handler.apps.values()].map((x) => x.ip)).toEqual(['10.0.0.9']);
  });
});

describe('a refused peer', () => {
  it('gets ERR_PERMISSION for a HELLO, its garbage is not even parsed, and others are served', async () => {
    let refuse = true;
    const seen: TrapPeer[] = [];
    const { s, sock, lines, handler } = start((p) => {
      seen.push(p);
      return refuse ? 'only appswitch run may register programs (a test refusal)' : undefined;
    });
    const a = connect(sock);
    native.send(a, Buffer.from('garbage'));
    try {
      native.send(a, Buffer.alloc(112, 0xff));
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EPIPE'); /* the server may have dropped us already */
    }
    await waitFor(() => s.connections === 0 && seen.length === 1);
    expect(s.badMessages).toBe(0);
    expect(lines.join('')).not.toContain('malformed');
    expect(seen[0]?.pid).toBe(process.pid);
    expect(seen[0]?.acceptedAt).toBeGreaterThan(0);
    const b = connect(sock);
    native.send(b, encodeMsg({ type: MsgType.HELLO, seq: 1, result: 0, payload: Buffer.from('{"ip":"10.0.0.9","cmd":["x"]}') }));
    const r = await reply(b);
    expect(r.result).toBe(-1);
    expect(r.text).toBe('ERR_PERMISSION: only appswitch run may register programs (a test refusal)');
    expect(handler.apps.size).toBe(0);
    refuse = false;
    const c = connect(sock);
    native.send(c, encodeMsg({ type: MsgType.HELLO, seq: 1, result: 0, payload: Buffer.from('{"cmd":["x"]}') }));
    expect((await reply(c)).result).toBe(0);
  });
});

describe("the admission's view of a process (readProcess)", () => {
  const ticks = (): number => Math.floor(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 100);

  it('reads a live process; refuses one that started after the connection was accepted (a reused pid); nothing once it is gone', async () => {
    const acceptedLongAgo = ticks() - 200;
    const p = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pid = p.pid as number;
    try {
      const now = ticks() + 1;
      const facts = (await waitFor(() => {
        const f = readProcess(pid, now);
        return typeof f === 'object' && f.exePath.endsWith('/sleep') ? f : undefined;
      })) as ProcessFacts;
      expect(facts.seccomp).toBe(0);
      expect(facts.capEff & (1n << 21n)).toBe(1n << 21n); /* root: CAP_SYS_ADMIN */
      expect(readProcess(pid, acceptedLongAgo)).toBeUndefined();
    } finally {
      p.kill('SIGKILL');
    }
    await new Promise((r) => p.once('exit', r));
    await waitFor(() => readProcess(pid) === undefined);
  });
});
