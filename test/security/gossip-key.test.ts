/** Issue 10, item 1(b): the cluster key's life cycle with DEFAULT flags. The first start of a node that joins
 * nobody generates STATE-DIR/gossip.key (0600) and a restart keeps it; a node started with --join and no key refuses
 * to start, saying how to give it one; plaintext needs --gossip-plaintext (flag or config key) and warns;
 * `appswitch keygen` writes keys and never overwrites one. */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readKeyring } from '../../src/daemon/gossip-key.js';
import { CLI, finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

const hosts: TestHost[] = [];
afterAll(async () => {
  for (const h of hosts) await h.destroy();
});

function host(tag: string): TestHost {
  const h = TestHost.create(tag);
  hosts.push(h);
  return h;
}

describe('the cluster key', () => {
  it('is generated on the first start (0600, never logged) and kept by a restart', async () => {
    const h = host('gk');
    await h.startDaemon(['--node-name', 'k1']);
    const file = path.join(h.stateDir, 'gossip.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(readKeyring(file)).toHaveLength(1);
    await h.waitForLog(`"gossipKey":"${file}"`);
    await h.waitForLog('"source":"generated"');
    const secret = text.split('\n').find((l) => l && !l.startsWith('#')) as string;
    expect(h.daemonLog).not.toContain(secret);
    killTree(h.daemon!, 'SIGTERM');
    await finish(h.daemon!, 15_000);
    h.daemonLog = '';
    await h.startDaemon(['--node-name', 'k1']);
    expect(readFileSync(file, 'utf8')).toBe(text);
    await h.waitForLog('"source":"state-dir"');
  });

  it('a node told to --join without a key refuses to start and says how to give it the key', async () => {
    const h = host('gj');
    const r = await h.exec(['node', CLI, 'daemon', '--state-dir', h.stateDir, '--node-address', h.address, '--join', '192.0.2.9'], 20_000);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('without a cluster key');
    expect(r.stderr).toContain(path.join(h.stateDir, 'gossip.key'));
    expect(r.stderr).toContain('--gossip-key');
    expect(() => statSync(path.join(h.stateDir, 'gossip.key'))).toThrow(); /* no key of its own was made */
  });

  it('plaintext only when asked (flag or config key), with a warning; never together with a key', async () => {
    const h = host('gp');
    await h.startDaemon(['--node-name', 'p1', '--gossip-plaintext']);
    await h.waitForLog(/"level":40[^\n]*NOT authenticated \(--gossip-plaintext\)/);
    await h.waitForLog('"gossipKey":null');
    killTree(h.daemon!, 'SIGTERM');
    await finish(h.daemon!, 15_000);
    const conf = path.join(h.stateDir, 'config.yaml');
    writeFileSync(conf, 'gossip-plaintext: true\njoin: [192.0.2.9]\n');
    h.daemonLog = '';
    await h.startDaemon(['--node-name', 'p1', '--config', conf]);
    await h.waitForLog('NOT authenticated');
    killTree(h.daemon!, 'SIGTERM');
    await finish(h.daemon!, 15_000);
    const both = await h.exec(['node', CLI, 'daemon', '--state-dir', h.stateDir, '--gossip-plaintext', '--gossip-key', conf], 20_000);
    expect(both.code).toBe(125);
    expect(both.stderr).toContain('exclude each other');
  });

  it('appswitch keygen prints a key, writes one 0600, and never overwrites a file', async () => {
    const h = host('kg');
    const out = await h.exec(['node', CLI, 'keygen']);
    expect(out.code).toBe(0);
    const line = out.stdout.split('\n').find((l) => l && !l.startsWith('#')) as string;
    expect(Buffer.from(line, 'base64')).toHaveLength(32);
    const file = path.join(h.stateDir, 'k.key');
    const w = await h.exec(['node', CLI, 'keygen', file]);
    expect(w.code, w.stderr).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const first = readFileSync(file, 'utf8');
    const again = await h.exec(['node', CLI, 'keygen', file]);
    expect(again.code).toBe(125);
    expect(again.stderr).toContain('exists');
    expect(readFileSync(file, 'utf8')).toBe(first);
    // and a daemon uses it
    await h.startDaemon(['--node-name', 'g1', '--gossip-key', file, '--join', '192.0.2.9']);
    await waitFor(() => h.daemonLog.includes(`"gossipKey":"${file}"`), 5_000);
    await h.waitForLog('"source":"flag"');
  });
});
