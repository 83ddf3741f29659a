/** src/api serves what the daemon hands it (ApiSources) and nothing else: it may import node built-ins, pino's
 * types, the control protocol's schema, the peer credentials type, the event types, the error classes and itself;
 * never the daemon, the native binding or a module with state of its own (the live view mounts it too). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const dir = join(import.meta.dirname, '../../src/api');
const ALLOWED = /^(node:[a-z_/]+|pino|\.\.\/daemon\/control-protocol\.js|\.\.\/daemon\/access\.js|\.\.\/events\/types\.js|\.\.\/errors\.js|\.\.\/exclusive-file\.js|\.\.\/net-listen\.js|\.\/[a-z-]+\.js)$/;

describe('src/api dependencies', () => {
  it('imports only node built-ins, pino, the control protocol, access (a type), the event types, errors and src/api', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('handler.ts');
    const bad: string[] = [];
    for (const f of files) {
      const text = readFileSync(join(dir, f), 'utf8');
      for (const m of text.matchAll(/^\s*(?:import|export)\b([^'"]*?)from\s+'([^']+)'/gm)) {
        const spec = m[2] ?? '';
        if (!ALLOWED.test(spec)) bad.push(`${f}: ${spec}`);
        if (spec === '../daemon/access.js' && !/^\s*(?:import|export)\s+type\b/.test(m[0])) bad.push(`${f}: ${spec} must be a type import (access.ts reads /proc)`);
      }
    }
    expect(bad).toEqual([]);
  });
});
