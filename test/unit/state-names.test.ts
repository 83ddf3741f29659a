/** The default node name (HOSTNAME-NODEADDRESS, src/daemon/config.ts) and the upgrade from the former default (the
 * hostname): a state saved under the former name is taken over when the name is the default, not when the operator
 * named the node. */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultNodeName, resolveConfig } from '../../src/daemon/config.js';
import { encodeState, loadState } from '../../src/daemon/state.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const log = pino({ level: 'silent' });
const snapshot = {
  apps: [{ id: '0000000a', identity: '10.1.0.1', ip: '10.1.0.1', secret: 'a'.repeat(32), uid: 0, launcherPid: 4242, startedAt: 1, tags: {}, cmd: ['sleep'] }],
  bindings: [],
  services: [],
};

function saved(node: string): string {
  const d = mkdtempSync(path.join(tmpdir(), 'appswitch-names-'));
  dirs.push(d);
  writeFileSync(path.join(d, 'state.json'), encodeState(node, snapshot));
  return d;
}

describe('node names', () => {
  it('defaults to HOSTNAME-NODEADDRESS; --node-name wins', () => {
    expect(defaultNodeName('web1', '192.0.2.10')).toBe('web1-192.0.2.10');
    const c = resolveConfig({ nodeAddress: '192.0.2.10' });
    expect(c.nodeName).toBe(`${os.hostname()}-192.0.2.10`);
    expect(c.formerNodeNames).toEqual([os.hostname()]);
    const named = resolveConfig({ nodeAddress: '192.0.2.10', nodeName: 'db' });
    expect(named.nodeName).toBe('db');
    expect(named.formerNodeNames).toEqual([]);
  });

  it("takes over a state saved under the former default name (the hostname), only when asked to", () => {
    const d = saved('oldhost');
    expect(loadState(d, 'oldhost-192.0.2.10', log, ['oldhost'])?.apps.map((a) => a.id)).toEqual(['0000000a']);
    const other = saved('oldhost');
    expect(loadState(other, 'db', log, [])).toBeUndefined(); /* another node's state: moved aside */
    expect(existsSync(path.join(other, 'state.json.bad'))).toBe(true);
    expect(loadState(saved('someone-else'), 'oldhost-192.0.2.10', log, ['oldhost'])).toBeUndefined();
  });
});
