/** RateLimitedLog (src/trap/limits.ts): one line per key per interval, at the level asked, the next saying how many
 * were left out. A fake clock and a logger that keeps its lines. */
import pino from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { RateLimitedLog } from '../../src/trap/limits.js';

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, out), lines };
}

describe('RateLimitedLog', () => {
  it('one line per key per interval at its level; the next carries the count left out; keys apart', async () => {
    const { log, lines } = capture();
    let t = 1_000;
    const r = new RateLimitedLog(log, 10_000, () => t);
    for (let i = 0; i < 50; i++) r.info('no-service/a1/tcp/10.9.9.8:1', { app: 'a1' }, 'connect refused: no such service');
    r.warn('denied/a1/tcp/10.0.0.6:80', { app: 'a1' }, 'connect denied by policy');
    r.info('no-service/a2/tcp/10.9.9.8:1', { app: 'a2' }, 'connect refused: no such service');
    t += 9_999;
    r.info('no-service/a1/tcp/10.9.9.8:1', { app: 'a1' }, 'connect refused: no such service');
    t += 1;
    r.info('no-service/a1/tcp/10.9.9.8:1', { app: 'a1' }, 'connect refused: no such service');
    await new Promise((res) => setImmediate(res));
    expect(lines.map((l) => [l.level, l.msg, l.app, l.suppressed])).toEqual([
      [30, 'connect refused: no such service', 'a1', undefined],
      [40, 'connect denied by policy', 'a1', undefined],
      [30, 'connect refused: no such service', 'a2', undefined],
      [30, 'connect refused: no such service', 'a1', 50], /* 49 in the burst and one just inside the interval */
    ]);
  });
});
