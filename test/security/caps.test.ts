/** Issue 10, item 2: a program run as root under `appswitch run` attacks the generator, the host's network, the
 * kernel and the daemon's sockets (test/helpers/attack-caps.c); each attack must fail. Before the fix (programs
 * kept all of root's capabilities and the generator was dumpable) every one of them worked. Also: the capability
 * set is exactly Docker's default, --user / --cap-add / --cap-drop behave as documented, and programs that drop to
 * their own user still can. Real programs, the real filter, a real daemon, in a namespace this file creates. */
import { execFileSync } from 'node:child_process';
import { chmodSync, linkSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launcherPath } from '../../src/native/binding.js';
import { compileHelper, killTree, TestHost } from '../helpers/hosts.js';

let h: TestHost;
let ATTACK: string;
/** A world-writable scratch directory outside the daemon's state directory (programs cannot see that one). */
let scratch: string;

/** Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
 * MKNOD AUDIT_WRITE SETFCAP (bits 0 1 3 4 5 6 7 8 10 18 27 29 31). */
const DOCKER = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 27, 29, 31].reduce((m, b) => m | (1n << BigInt(b)), 0n);
const FORBIDDEN = { DAC_READ_SEARCH: 2, NET_ADMIN: 12, SYS_MODULE: 16, SYS_RAWIO: 17, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_BOOT: 22, PERFMON: 38, BPF: 39 };

beforeAll(async () => {
  ATTACK = compileHelper('attack-caps');
  chmodSync(path.dirname(ATTACK), 0o755); /* --user programs run it too */
  scratch = mkdtempSync(path.join(tmpdir(), 'appswitch-caps-'));
  chmodSync(scratch, 0o1777);
  h = TestHost.create('caps');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Runs attack-caps CASE under `appswitch run` (as root unless appArgs say otherwise); its report, line by line. */
async function attack(args: string[], appArgs: string[] = []): Promise<Map<string, string>> {
  const r = await h.runToEnd(appArgs, [ATTACK, ...args]);
  expect(r.code, r.stderr).toBe(0);
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const i = line.search(/\s/);
    out.set(line.slice(0, i).replace(/:$/, ''), line.slice(i + 1).trim());
  }
  return out;
}

function caps(report: Map<string, string>, set: 'CapBnd' | 'CapPrm' | 'CapEff' | 'CapInh' | 'CapAmb'): bigint {
  return BigInt(`0x${report.get(set) ?? 'x'}`);
}

describe('a program started by root', () => {
  it("keeps exactly Docker's default capabilities: bounding, permitted and effective; inheritable and ambient empty", async () => {
    const s = await attack(['status']);
    expect(caps(s, 'CapBnd').toString(16)).toBe(DOCKER.toString(16));
    expect(caps(s, 'CapPrm').toString(16)).toBe(DOCKER.toString(16));
    expect(caps(s, 'CapEff').toString(16)).toBe(DOCKER.toString(16));
    expect(caps(s, 'CapInh')).toBe(0n);
    expect(caps(s, 'CapAmb')).toBe(0n);
    for (const bit of Object.values(FORBIDDEN)) expect(caps(s, 'CapBnd') & (1n << BigInt(bit))).toBe(0n);
    expect(s.get('Uid')).toMatch(/^0\s+0\s+0\s+0$/);
  });

  it('cannot ptrace the generator (PTRACE_ATTACH, PTRACE_SEIZE)', async () => {
    const s = await attack(['ptrace']);
    expect(s.get('ptrace-attach')).toBe('EPERM');
    expect(s.get('ptrace-seize')).toBe('EPERM');
  });

  it("cannot take the generator's descriptors (daemon session, seccomp listener) with pidfd_getfd", async () => {
    const s = await attack(['pidfd-getfd']);
    expect(s.get('pidfd-getfd')).toBe('EPERM');
  });

  it("cannot read the generator's memory (process_vm_readv, /proc/PPID/mem)", async () => {
    const s = await attack(['vm-read']);
    expect(s.get('vm-read')).toBe('EPERM');
    expect(s.get('proc-mem-open')).toBe('EACCES');
  });

  it("cannot bring down an interface of the daemon's namespace through an injected socket (SIOCSIFFLAGS)", async () => {
    const up = (): string => execFileSync('ip', ['-n', h.ns, '-br', 'link', 'show', 'v1']).toString();
    expect(up()).toMatch(/\bUP\b/);
    const s = await attack(['ifdown', 'v1']);
    expect(s.get('socket')).toBe('ok');
    expect(s.get('siocgifflags')).toBe('ok'); /* the injected socket does see the daemon's namespace */
    expect(s.get('siocsifflags')).toBe('EPERM');
    expect(up()).toMatch(/\bUP\b/);
  });

  it('cannot load a BPF program, mount, or create user and cgroup namespaces', async () => {
    const s = await attack(['bpf']);
    expect(s.get('bpf-prog-load')).toBe('EPERM');
    const m = await attack(['mount']);
    expect(m.get('mount')).toBe('EPERM');
    const u = await attack(['userns']);
    expect(u.get('clone-newuser')).toBe('EPERM');
    expect(u.get('unshare-newcgroup')).toBe('EPERM');
    expect(u.get('unshare-newuser')).toBe('EPERM');
  });

  it("cannot connect to the daemon's control or trap socket by path (the state directory is an empty tmpfs)", async () => {
    const t = await attack(['connect', path.join(h.stateDir, 'trap.sock'), 'seqpacket']);
    expect(t.get('connect')).toBe('ENOENT');
    const c = await attack(['connect', h.socket, 'stream']);
    expect(c.get('connect')).toBe('ENOENT');
  });

  it('nor through a working directory inside the state directory', async () => {
    const p = h.run([], [ATTACK, 'connect', 'trap.sock', 'seqpacket'], { cwd: h.stateDir });
    const out: string[] = [];
    p.stdout?.on('data', (b: Buffer) => out.push(b.toString()));
    const code = await new Promise<number | null>((resolve) => p.on('close', resolve));
    expect(code).toBe(0);
    expect(out.join('')).toContain('connect ENOENT');
  });
});

describe('the daemon refuses what reaches its sockets by another path', () => {
  let links: string;
  beforeAll(() => {
    links = mkdtempSync(path.join(tmpdir(), 'appswitch-links-'));
    chmodSync(links, 0o755);
    /* a hard link to each socket, outside the covered state directory (as a careless admin might leave one) */
    linkSync(path.join(h.stateDir, 'trap.sock'), path.join(links, 'trap.sock'));
    linkSync(h.socket, path.join(links, 'appswitch.sock'));
  });
  afterAll(() => rmSync(links, { recursive: true, force: true }));

  it('a program forging a registration on the trap socket is refused (not the launcher)', async () => {
    const s = await attack(['hello', path.join(links, 'trap.sock'), '{"ip":"10.0.0.77","tags":{"zone":"x"},"cmd":["forged"]}']);
    expect(s.get('connect')).toBe('ok'); /* the link works: only the daemon's check stands in the way */
    /* the program is under the seccomp filter and is not the launcher: the first check that fails names it */
    expect(s.get('reply')).toMatch(
      /^result -1: ERR_PERMISSION: only appswitch run may register programs \(pid \d+ (runs .*attack-caps, not the appswitch launcher|is under a seccomp filter \(a program under appswitch, or a sandbox\))\)/,
    );
    await h.waitForLog(/trap connection refused: only appswitch run may register programs|trap connection refused: pid \d+ (runs|is under a seccomp filter)/);
    const apps = JSON.parse((await h.cli(['get', 'apps', '--json'])).stdout) as Array<{ ip?: string }>;
    expect(apps.some((a) => a.ip === '10.0.0.77')).toBe(false);
  });

  it('a program that execs the launcher is refused (it is under a seccomp filter)', async () => {
    const r = await h.runToEnd([], [launcherPath(), '--socket', path.join(links, 'trap.sock'), '--meta', '{"ip":"10.0.0.78","cmd":["x"]}', '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/ERR_PERMISSION: only appswitch run may register programs \(pid \d+ is under a seccomp filter/);
  });

  it('a program using the control API is refused (ERR_PERMISSION)', async () => {
    const s = await attack(['control', path.join(links, 'appswitch.sock')]);
    expect(s.get('connect')).toBe('ok');
    expect(s.get('answer')).toContain('ERR_PERMISSION');
    expect(s.get('answer')).toContain('programs may not use the control API');
    await h.waitForLog(/control connection refused: pid \d+ is a program under appswitch/);
    expect((await h.cli(['status', '--json'])).code).toBe(0); /* the CLI outside still works */
  });
});

describe('--cap-add / --cap-drop', () => {
  it('--cap-add of a forbidden capability is refused with exit 125, in any spelling', async () => {
    for (const cap of ['SYS_ADMIN', 'cap_sys_ptrace', 'CAP_NET_ADMIN', 'bpf', 'ALL']) {
      const r = await h.runToEnd(['--cap-add', cap], ['true']);
      expect(r.code, cap).toBe(125);
      expect(r.stderr, cap).toMatch(/--cap-add .*: refused; a program under appswitch never gets/);
    }
  });

  it('the launcher refuses a forbidden --cap-add too (second line of defence)', async () => {
    const r = await h.exec([launcherPath(), '--socket', path.join(h.stateDir, 'trap.sock'), '--cap-add', 'SYS_ADMIN', '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('--cap-add SYS_ADMIN: refused');
    const u = await h.exec([launcherPath(), '--socket', path.join(h.stateDir, 'trap.sock'), '--cap-add', 'NO_SUCH_CAP', '--', 'true']);
    expect(u.code).toBe(125);
    expect(u.stderr).toContain('unknown capability');
  });

  it('--cap-add NET_RAW adds it; --cap-drop CHOWN removes it; --cap-drop ALL leaves none', async () => {
    const a = await attack(['status'], ['--cap-add', 'NET_RAW']);
    expect(caps(a, 'CapEff').toString(16)).toBe((DOCKER | (1n << 13n)).toString(16));
    expect(caps(a, 'CapBnd').toString(16)).toBe((DOCKER | (1n << 13n)).toString(16));
    const d = await attack(['status'], ['--cap-drop', 'cap_chown']);
    expect(caps(d, 'CapEff').toString(16)).toBe((DOCKER & ~1n).toString(16));
    const n = await attack(['status'], ['--cap-drop', 'ALL']);
    expect(caps(n, 'CapBnd')).toBe(0n);
    expect(caps(n, 'CapEff')).toBe(0n);
  });
});

describe('--user, and programs that drop to their own user', () => {
  it('--user nobody runs the program as nobody, with its groups, HOME and USER, and no capabilities', async () => {
    const file = path.join(scratch, 'by-nobody');
    const r = await h.runToEnd(['--user', 'nobody'], ['sh', '-c', `id -u; id -g; echo "$USER $LOGNAME $HOME"; touch ${file}`]);
    expect(r.code, r.stderr).toBe(0);
    const nobody = execFileSync('id', ['-u', 'nobody']).toString().trim();
    const [uid, gid, env] = r.stdout.split('\n');
    expect(uid).toBe(nobody);
    expect(gid).toBe(execFileSync('id', ['-g', 'nobody']).toString().trim());
    expect(env).toBe(`nobody nobody ${execFileSync('getent', ['passwd', 'nobody']).toString().split(':')[5]}`);
    expect(statSync(file).uid).toBe(Number(nobody));
    const s = await attack(['status'], ['--user', 'nobody']);
    for (const set of ['CapBnd', 'CapPrm', 'CapEff', 'CapInh', 'CapAmb'] as const) expect(caps(s, set), set).toBe(0n);
    expect(s.get('Uid')).toMatch(new RegExp(`^${nobody}\\s+${nobody}\\s+${nobody}\\s+${nobody}$`));
  });

  it('a server and a client run as nobody still get their sockets trapped and served (bind, listen, connect, accept)', async () => {
    const srv = h.run(['--ip', '10.0.0.31', '--user', 'nobody'], ['python3', '-m', 'http.server', '8000', '--directory', '/']);
    try {
      await h.waitService('10.0.0.31', 8000);
      const c = await h.runToEnd(['--user', 'nobody'], ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', 'http://10.0.0.31:8000/']);
      expect(c.stdout, c.stderr).toBe('200');
    } finally {
      killTree(srv, 'SIGKILL');
    }
  });

  it('--user NAME:GROUP and a numeric --user UID:GID; an unknown user is refused with exit 125', async () => {
    const r = await h.runToEnd(['--user', 'nobody:daemon'], ['sh', '-c', 'id -g']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(execFileSync('getent', ['group', 'daemon']).toString().split(':')[2]);
    const n = await h.runToEnd(['--user', '54321:54321'], ['sh', '-c', 'id -u; id -g']);
    expect(n.code, n.stderr).toBe(0);
    expect(n.stdout.split('\n').slice(0, 2)).toEqual(['54321', '54321']);
    const bad = await h.runToEnd(['--user', 'no-such-user-here'], ['true']);
    expect(bad.code).toBe(125);
    expect(bad.stderr).toContain('--user no-such-user-here: no such user');
  });

  it('--cap-add with a non-root --user is refused (such a program keeps no capability)', async () => {
    const r = await h.runToEnd(['--user', 'nobody', '--cap-add', 'NET_RAW'], ['true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('gets no capabilities');
  });

  it('a root program can still drop to another user, as sshd or postgres do (setgroups, setgid, setuid)', async () => {
    const s = await attack(['setuid', '65534', '65534']);
    expect(s.get('setgroups')).toBe('ok');
    expect(s.get('setgid')).toBe('ok');
    expect(s.get('setuid')).toBe('ok');
    expect(s.get('Uid')).toMatch(/^65534\s+65534\s+65534\s+65534$/);
    expect(caps(s, 'CapEff')).toBe(0n);
  });

  it('su and setpriv work inside', async () => {
    const su = await h.runToEnd([], ['su', 'nobody', '-s', '/bin/sh', '-c', 'id -u']);
    expect(su.code, su.stderr).toBe(0);
    expect(su.stdout.trim()).toBe(execFileSync('id', ['-u', 'nobody']).toString().trim());
    const sp = await h.runToEnd([], ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups', '--', 'id', '-u']);
    expect(sp.code, sp.stderr).toBe(0);
    expect(sp.stdout.trim()).toBe('65534');
  });
});
