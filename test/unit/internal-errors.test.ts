/** Unexpected exceptions (daemon/internal-errors.ts): logged, counted per module and exposed as a metric; each costs
 * one request and the next one is served — in the control server, the gossip transport, a guarded timer — and what
 * escapes every guard is caught at the process level instead of ending the daemon. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlServer } from '../../src/daemon/control.js';
import { guard, InternalErrors } from '../../src/daemon/internal-errors.js';
import { DaemonMetrics } from '../../src/daemon/metrics.js';
import { systemClock, UdpTransport } from '../../src/gossip/index.js';
import { ROOT, waitFor } from '../helpers/hosts.js';

/** A logger that keeps its records. */
function recorder(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

describe('InternalErrors', () => {
  it('counts every exception by module and logs one line per module and place every 10 s, with how many were left out', () => {
    const { log, lines } = recorder();
    let now = 1_000_000;
    const e = new InternalErrors(log, () => now);
    for (let i = 0; i < 5; i++) e.report('dns', 'a UDP query', new TypeError(`bad ${i}`));
    e.report('trap', 'handling a trap message', new Error('x'));
    expect(e.snapshot()).toMatchObject({ dns: 5, trap: 1, gossip: 0, process: 0 });
    expect(lines.filter((l) => l.level === 50)).toHaveLength(2);
    now += 10_000;
    e.report('dns', 'a UDP query', new Error('later'));
    const last = lines.at(-1) as Record<string, unknown>;
    expect(last).toMatchObject({ level: 50, module: 'dns', where: 'a UDP query', suppressed: 4, internalErrors: 6 });
    expect(String(last.msg)).toContain('the daemon keeps serving');
  });

  it('guard reports a throw and runs the cleanup; a throwing cleanup goes no further either', () => {
    const seen: string[] = [];
    let cleaned = false;
    guard((what) => seen.push(what), 'a handler', () => { throw new Error('boom'); }, () => { cleaned = true; throw new Error('again'); });
    expect(seen).toEqual(['a handler']);
    expect(cleaned).toBe(true);
  });

  it("a guarded clock's timer that throws is reported, and the next timer still runs", async () => {
    const e = new InternalErrors(recorder().log);
    const clock = e.guardClock(systemClock, 'gossip');
    let ran = false;
    clock.setTimeout(() => { throw new Error('probe round exploded'); }, 1);
    clock.setTimeout(() => (ran = true), 5);
    await waitFor(() => ran, 5000, 5);
    expect(e.snapshot().gossip).toBe(1);
  });

  it('is exposed as appswitch_internal_errors_total{module}', async () => {
    const e = new InternalErrors(recorder().log);
    e.report('dns', 'a UDP query', new Error('x'));
    e.report('dns', 'a UDP query', new Error('y'));
    const m = new DaemonMetrics({
      handler: () => ({ denied: 0, refused: 0, tcpConnections: 0, fastpathConnections: 0, daemonPortRefused: 0, limitServices: 0, limitOffers: 0, limitPending: 0 }),
      services: () => ({ local: 0, remote: 0 }),
      apps: () => 0,
      gossip: () => undefined,
      openFds: () => 1,
      internalErrors: () => e.snapshot(),
    });
    const text = await m.text();
    expect(text).toContain('appswitch_internal_errors_total{module="dns"} 2');
    expect(text).toContain('appswitch_internal_errors_total{module="process"} 0');
  });
});

describe('handlers that throw cost one request', () => {
  it('control: a method that throws answers ERR_INTERNAL, is counted, and the next request on the same connection is answered', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-ie-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const e = new InternalErrors(recorder().log);
    let calls = 0;
    const server = new ControlServer(() => {
      if (calls++ === 0) throw new TypeError("Cannot read properties of undefined (reading 'x')");
      return { ok: true };
    }, pino({ level: 'silent' }));
    server.onInternalError = e.reporter('control');
    const sockPath = path.join(dir, 'c.sock');
    await server.listen(sockPath, () => undefined);
    cleanups.push(() => server.close());
    const answers = await new Promise<string[]>((resolve, reject) => {
      const s = net.connect(sockPath);
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString();
        const l = buf.split('\n').filter(Boolean);
        if (l.length >= 2) {
          s.destroy();
          resolve(l);
        }
      });
      s.on('error', reject);
      s.write('{"id":1,"method":"status"}\n{"id":2,"method":"status"}\n');
    });
    expect(JSON.parse(answers[0] as string)).toMatchObject({ id: 1, error: { code: 'ERR_INTERNAL' } });
    expect(JSON.parse(answers[1] as string)).toEqual({ id: 2, result: { ok: true } });
    expect(e.snapshot().control).toBe(1);
  });

  it('gossip: a packet handler that throws is reported; the next packet is handled', async () => {
    const e = new InternalErrors(recorder().log);
    const t = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0, onInternalError: e.reporter('gossip') });
    const sender = await UdpTransport.create({ bindAddress: '127.0.0.1', port: 0 });
    cleanups.push(() => t.close(), () => sender.close());
    const got: string[] = [];
    t.onPacket((_from, buf) => {
      const text = Buffer.from(buf).toString();
      if (text === 'poison') throw new RangeError('offset out of range');
      got.push(text);
    });
    sender.sendPacket(t.localAddress, Buffer.from('poison'));
    await waitFor(() => e.snapshot().gossip === 1, 5000, 10);
    sender.sendPacket(t.localAddress, Buffer.from('fine'));
    await waitFor(() => got.includes('fine'), 5000, 10);
  });
});

describe('process level', () => {
  /** Runs a node script that throws out of a callback and rejects a promise nobody awaits, with or without the
   * daemon's process guards; it reports what it counted after both happened. */
  function run(guards: boolean): { status: number | null; stdout: string; stderr: string } {
    const mod = path.join(ROOT, 'dist/src/daemon/internal-errors.js');
    const script = `
      import pino from 'pino';
      import { InternalErrors, installProcessGuards } from ${JSON.stringify(mod)};
      const e = new InternalErrors(pino({ level: 'error' }));
      if (${guards}) installProcessGuards(process, e);
      setImmediate(() => { throw new Error('thrown out of a callback'); });
      Promise.reject(new Error('rejected, never awaited'));
      setTimeout(() => { console.log(JSON.stringify({ still: 'serving', counts: e.snapshot() })); }, 200);
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('without the guards such a throw ends the process; with them it is logged and counted and the process goes on', () => {
    const bare = run(false);
    expect(bare.status).not.toBe(0);
    expect(bare.stdout).not.toContain('still');
    const guarded = run(true);
    expect(guarded.status, guarded.stderr).toBe(0);
    const lines = guarded.stdout.trim().split('\n');
    const summary = JSON.parse(lines.at(-1) as string) as { still: string; counts: Record<string, number> };
    expect(summary).toMatchObject({ still: 'serving', counts: { process: 2 } });
    const logged = lines.slice(0, -1).map((l) => JSON.parse(l) as { msg: string; where: string });
    expect(logged.map((l) => l.where).sort()).toEqual(['an uncaught exception', 'an unhandled promise rejection']);
  });
});
