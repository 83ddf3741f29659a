/** scripts/install.sh and scripts/appswitch.service: installed twice into a temporary DESTDIR (the real /usr, /etc
 * and /opt are never touched), checked file by file and for idempotence; the unit through `systemd-analyze
 * verify`; and the installed daemon run with exactly the unit's capability bounding set and NoNewPrivileges,
 * serving a program under appswitch. */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readKeyring } from '../../src/daemon/gossip-key.js';
import { finish, ROOT, TestHost, waitFor } from '../helpers/hosts.js';

const UNIT = readFileSync(path.join(ROOT, 'scripts/appswitch.service'), 'utf8');
let dest: string;

function install(env: Record<string, string> = {}): { code: number | null; out: string } {
  const r = spawnSync('bash', [path.join(ROOT, 'scripts/install.sh')], { env: { ...process.env, DESTDIR: dest, ...env }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** Every path under dir with its type, mode, owner and content hash (or link target). */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string): void => {
    const st = lstatSync(p);
    const rel = path.relative(dir, p) || '.';
    if (st.isSymbolicLink()) out.set(rel, `link ${readlinkSync(p)}`);
    else if (st.isDirectory()) {
      out.set(rel, `dir ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
      for (const e of readdirSync(p)) walk(path.join(p, e));
    } else out.set(rel, `file ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
  };
  walk(dir);
  return out;
}

beforeAll(() => {
  dest = mkdtempSync(path.join(tmpdir(), 'appswitch-install-'));
});
afterAll(() => {
  rmSync(dest, { recursive: true, force: true });
});

describe('install.sh into a DESTDIR', () => {
  let first = '';
  let tree: Map<string, string>;

  beforeAll(() => {
    const r = install();
    first = r.out;
    expect(r.code, r.out).toBe(0);
    tree = snapshot(dest);
  });

  it('installs the package, the command, the group, the unit and a default config', () => {
    const lib = path.join(dest, 'opt/appswitch');
    for (const f of ['package.json', 'bin/appswitch.js', 'dist/src/cli/main.js', 'build/Release/appswitch.node', 'build/Release/appswitch-launcher', 'node_modules/yaml/package.json', 'node_modules/pino/package.json']) {
      expect(existsSync(path.join(lib, f)), f).toBe(true);
    }
    expect(existsSync(path.join(lib, 'node_modules/vitest')), 'dev dependencies stay out').toBe(false);
    expect(existsSync(path.join(lib, 'node_modules/typescript'))).toBe(false);
    expect(readlinkSync(path.join(dest, 'usr/local/bin/appswitch'))).toBe('/opt/appswitch/bin/appswitch.js');
    expect(readFileSync(path.join(dest, 'etc/group'), 'utf8')).toMatch(/^appswitch:x:\d+:$/m);
    expect(readFileSync(path.join(dest, 'etc/systemd/system/appswitch.service'), 'utf8')).toBe(UNIT);
    const conf = readFileSync(path.join(dest, 'etc/appswitch/config.yaml'), 'utf8');
    expect(conf).toContain('log-level: info');
    /* the cluster key: in /etc (the state dir is a tmpfs), 0600, 32 bytes, named by the config */
    const key = path.join(dest, 'etc/appswitch/gossip.key');
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(readKeyring(key)).toHaveLength(1);
    expect(conf).toMatch(/^gossip-key: \/etc\/appswitch\/gossip\.key /m);
    expect(first).toContain('key: generated /etc/appswitch/gossip.key');
    const launcher = 'opt/appswitch/build/Release/appswitch-launcher';
    for (const p of tree.keys()) if (p.startsWith('opt/') && p !== launcher) expect(tree.get(p), p).toMatch(/^(link|(dir|file) \d+ 0:0)/);
    /* setuid root, executable by root and the group only: members run programs as themselves (run-as-user.test.ts) */
    const gid = /^appswitch:x:(\d+):/m.exec(readFileSync(path.join(dest, 'etc/group'), 'utf8'))?.[1];
    expect(tree.get(launcher)).toMatch(new RegExp(`^file 4750 0:${gid} `));
    expect(first).toContain('launcher: /opt/appswitch/build/Release/appswitch-launcher made setuid root, root:appswitch 4750');
    expect(first).toContain('systemctl not run');
    /* the installed copy runs on its own (the addon and its dependencies found inside it) */
    const v = execFileSync('node', [path.join(lib, 'bin/appswitch.js'), 'version', '--json', '--socket', '/nonexistent']).toString();
    expect(JSON.parse(v)).toMatchObject({ version: JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version, daemon: null });
  });

  it('the default config is a valid daemon config', () => {
    const r = spawnSync('node', [path.join(ROOT, 'bin/appswitch.js'), 'daemon', '--config', path.join(dest, 'etc/appswitch/config.yaml'), '--ports', '9-3'], {
      encoding: 'utf8',
    });
    /* the file parses; the (deliberately bad) command-line flag is what stops it */
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/--ports/);
    expect(r.stderr).not.toMatch(/config\.yaml:\d+/);
  });

  it('a second run changes nothing and says so; an operator-edited config is kept', () => {
    const conf = path.join(dest, 'etc/appswitch/config.yaml');
    writeFileSync(conf, 'log-level: debug\n');
    const edited = snapshot(dest);
    const r = install();
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('package: /opt/appswitch is up to date');
    expect(r.out).toContain('command: /usr/local/bin/appswitch is in place');
    expect(r.out).toContain('group: appswitch exists');
    expect(r.out).toContain('launcher: /opt/appswitch/build/Release/appswitch-launcher is setuid root, root:appswitch 4750');
    expect(r.out).toContain('unit: /etc/systemd/system/appswitch.service is up to date');
    expect(r.out).toContain('config: /etc/appswitch/config.yaml exists (kept)');
    expect(snapshot(dest)).toEqual(edited);
    expect(readFileSync(conf, 'utf8')).toBe('log-level: debug\n');
    expect((readFileSync(path.join(dest, 'etc/group'), 'utf8').match(/^appswitch:/gm) ?? []).length).toBe(1);
  });

  it('another PREFIX and SYSCONFDIR are written into the unit', () => {
    const r = install({ PREFIX: '/usr', SYSCONFDIR: '/srv/etc' });
    expect(r.code, r.out).toBe(0);
    const unit = readFileSync(path.join(dest, 'etc/systemd/system/appswitch.service'), 'utf8');
    expect(unit).toContain('ExecStart=/usr/bin/appswitch daemon --config /srv/etc/appswitch/config.yaml');
    expect(unit).not.toContain('/usr/local/bin');
    expect(readlinkSync(path.join(dest, 'usr/bin/appswitch'))).toBe('/opt/appswitch/bin/appswitch.js');
  });
});

describe('appswitch.service', () => {
  it('has the restart, kill and hardening settings the daemon relies on', () => {
    for (const l of ['Restart=always', 'KillMode=process', 'ProtectSystem=strict', 'ReadWritePaths=/run/appswitch', 'ProtectHome=yes', 'NoNewPrivileges=yes']) {
      expect(UNIT).toContain(`\n${l}\n`);
    }
    expect(UNIT).toMatch(/\nExecStartPost=\/usr\/local\/bin\/appswitch status --wait \d+/);
  });

  it('passes systemd-analyze verify without a warning', (ctx) => {
    if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
      ctx.skip(); /* systemd-analyze is not installed: nothing to verify with */
      return;
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-unit-'));
    try {
      /* the commands must exist for verify: point them at the checkout's CLI */
      const unit = UNIT.replaceAll('/usr/local/bin/appswitch', path.join(ROOT, 'bin/appswitch.js'));
      writeFileSync(path.join(dir, 'appswitch.service'), unit);
      const r = spawnSync('systemd-analyze', ['verify', path.join(dir, 'appswitch.service')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr.split('\n').filter((l) => l.includes('appswitch')), r.stderr).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the installed daemon under the unit's capability bounding set", () => {
  let host: TestHost;
  afterAll(async () => {
    await host?.destroy();
  });

  it('starts (DNS on port 53, sockets chowned to a group root is not in) and serves a program under appswitch', async () => {
    /* `daemon` (gid 1 on Debian) stands in for the appswitch group: chown to it needs CAP_CHOWN */
    const group = spawnSync('getent', ['group', 'daemon'], { encoding: 'utf8' }).stdout.split(':');
    const caps = /\nCapabilityBoundingSet=(.*)\n/.exec(UNIT)?.[1]?.trim().split(/\s+/) ?? [];
    expect(caps.length).toBeGreaterThan(0);
    const bounding = ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
    const installed = path.join(dest, 'opt/appswitch/bin/appswitch.js');
    host = TestHost.create('caps');
    const d = host.spawn(['setpriv', '--bounding-set', bounding, '--no-new-privs', '--', 'node', installed, 'daemon', '--state-dir', host.stateDir, '--node-address', host.address, ...(group[2] ? ['--group', 'daemon'] : [])]);
    host.daemon = d;
    d.stdout?.on('data', (b: Buffer) => (host.daemonLog += b.toString()));
    d.stderr?.on('data', (b: Buffer) => (host.daemonLog += b.toString()));
    await waitFor(async () => (await host.cli(['status', '--json'])).code === 0, 15_000, 100).catch(() => {
      throw new Error(`the daemon did not come up under ${bounding}:\n${host.daemonLog}`);
    });
    const capBnd = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${d.pid}/status`, 'utf8'))?.[1];
    expect(BigInt(`0x${capBnd}`)).toBe(caps.reduce((m, c) => m | (1n << BigInt(CAP_NUMBERS[c] ?? 63)), 0n));
    if (group[2]) expect(statSync(host.socket).gid).toBe(Number(group[2]));
    /* `appswitch run` of the same installation: the daemon registers only its own launcher */
    const run = (args: string[]): ReturnType<TestHost['spawn']> => host.spawn(['node', installed, 'run', ...args]);
    run(['--ip', '10.0.0.5', '--', 'python3', '-m', 'http.server', '8000']);
    await host.waitService('10.0.0.5', 8000);
    const r = await finish(run(['--', 'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.5:8000/']));
    expect(r.stdout, r.stderr).toBe('200');
    expect(host.daemonLog).not.toMatch(/"level":(50|60)/); /* no error or fatal line */
  });
});

/** capabilities(7) numbers of the capabilities the unit names. */
const CAP_NUMBERS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_KILL: 5,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
};
