/** src/dns is a pure module (STYLE.md): it may import only node built-ins, dns-packet, ipaddr.js and itself. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const dir = join(import.meta.dirname, '../../src/dns');
const ALLOWED = /^(node:[a-z_/]+|dns-packet|ipaddr\.js|\.\/[a-z-]+\.js)$/;

describe('src/dns dependencies', () => {
  it('imports nothing outside node built-ins, dns-packet, ipaddr.js and src/dns', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('server.ts');
    const bad: string[] = [];
    for (const f of files) {
      const text = readFileSync(join(dir, f), 'utf8');
      for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)) {
        const spec = m[1] ?? '';
        if (!ALLOWED.test(spec)) bad.push(`${f}: ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
