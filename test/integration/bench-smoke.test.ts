/** The benchmark's smoke mode (`npm run bench -- --smoke`): every row of every table is measured — trapped call,
 * connect loop, throughput on one host and across two, connection set-up, HTTP — beside its baselines, and the targets
 * table is printed. Figures are printed, never asserted (they are timings on a shared 2-core machine). */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/hosts.js';

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(ROOT, 'dist/bench/run.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => p.kill('SIGTERM'), timeoutMs); // the bench turns a signal into a clean exit
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

describe('npm run bench -- --smoke', () => {
  it('measures every row beside its baselines and prints the targets', async () => {
    const { code, out } = await runBench(['--smoke'], 240_000);
    process.stdout.write(out.split('\n').filter((l) => l.startsWith('|') || l.startsWith('#') || l.startsWith('Target')).join('\n') + '\n');
    expect(code, out.slice(-3000)).toBe(0);
    expect(out).toMatch(/\| trapped call: getsockname\(\), median of each call \| µs\/call \| [\d.]+ \| [\d.]+ \|/);
    expect(out).toMatch(/\| socket\(\)\+connect\(\)\+close\(\) \| µs \| [\d.]+ \| [\d.]+ \|/);
    for (const title of ['### Throughput, one host', '### Throughput, two hosts', '### Connection set-up', '### HTTP', '### Targets']) {
      expect(out).toContain(title);
    }
    for (const row of [
      'native loopback, one namespace',
      'veth + Linux bridge',
      'haproxy `mode tcp` in the path',
      'appswitch, fast path (server',
      'appswitch, fast path off',
    ]) {
      expect(out, row).toMatch(new RegExp(`\\| [^|\\n]*${row.replace(/[()+|`]/g, '\\$&')}[^|]*\\| \\d+ \\|`));
    }
    expect(out).not.toMatch(/\| (failed|skipped)[:]/);
    expect(out).not.toMatch(/\| [^|]+ \| (failed|skipped)/);
    // the connection set-up table: 4 setups x 2 client counts, each with a median
    expect([...out.matchAll(/^\| (native loopback|haproxy `mode tcp`|appswitch, fast path[^|]*) \| (1|16) \| [\d.]+ \|/gm)].length).toBe(8);
  }, 300_000);
});
