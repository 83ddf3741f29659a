/** Hostile input: test/helpers/fuzz.c makes random argument sets for every trapped call, once natively and once under
 * appswitch with the same seed, and the per-case results must agree (test/helpers/fuzz-compare.ts lists the
 * differences that are by design or known). Racing threads rewrite a sockaddr while connect()/sendto() is trapped:
 * nothing may reach a service the policy refuses. APPSWITCH_FUZZ_SEED (default 42, or "random") and
 * APPSWITCH_FUZZ_ITERATIONS (per syscall, default 3000: 13 trapped calls make 39,000 cases, well under a minute on two
 * cores; set 20000 or more for a deeper run by hand) choose the run. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compare } from '../helpers/fuzz-compare.js';
import { compileHelper, finish, killTree, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;
let FUZZ: string;
const ITERATIONS = Number(process.env.APPSWITCH_FUZZ_ITERATIONS ?? 3000);
// A fixed seed keeps CI reproducible; APPSWITCH_FUZZ_SEED=random explores (some seeds still find the rare
// divergences listed in the fuzz branch report).
const SEED =
  process.env.APPSWITCH_FUZZ_SEED === 'random' ? String(Math.floor(Math.random() * 2 ** 32)) : (process.env.APPSWITCH_FUZZ_SEED ?? '42');

/** Docker's default capability set, as setpriv spells it (what a program started by root keeps, native/caps.h). */
const DOCKER_CAPS = '-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+sys_chroot,+mknod,+audit_write,+setfcap';

function daemonFds(): number {
  return readdirSync(`/proc/${h.daemon?.pid as number}/fd`).length;
}

async function daemonAnswers(): Promise<boolean> {
  return (await h.cli(['status', '--json'])).code === 0;
}

beforeAll(async () => {
  FUZZ = compileHelper('fuzz');
  h = TestHost.create('fuzz');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

/** Datagrams the kernel of the test host dropped because a receiving socket's buffer was full (/proc/net/snmp). */
async function udpBufferDrops(): Promise<number> {
  const lines = (await h.exec(['cat', '/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = (lines[0] ?? '').split(/\s+/);
  const values = (lines[1] ?? '').split(/\s+/);
  const v = Number(values[names.indexOf('RcvbufErrors')]);
  if (!Number.isInteger(v)) throw new Error('no Udp RcvbufErrors in /proc/net/snmp');
  return v;
}

describe('fuzz', () => {
  it(`gives the kernel's errno for ${ITERATIONS} random argument sets per trapped call (seed ${SEED})`, async () => {
    const fdsBefore = daemonFds();
    const args = ['cases', '--seed', SEED, '--iterations', String(ITERATIONS)];
    // each run works in an empty directory of its own, where the cases' Unix socket paths (relative names) live:
    // whether bind/connect/sendto to a path succeed depends on which socket files exist, so with shared paths the
    // native run's sockets were still there for the run under appswitch (fuzz.c, usage)
    const nativeDir = mkdtempSync(path.join(tmpdir(), 'appswitch-fuzz-native-'));
    const asDir = mkdtempSync(path.join(tmpdir(), 'appswitch-fuzz-as-'));
    let nat, as;
    try {
      // natively with the capabilities a root program keeps under appswitch (Docker's default set): privileged
      // socket options (SO_RCVBUFFORCE, SO_MARK...) then answer alike
      nat = await h.exec(['setpriv', '--bounding-set', DOCKER_CAPS, '--inh-caps', '-all', '--', FUZZ, ...args, '--unix-dir', nativeDir], 120_000);
      as = await h.runToEnd(['--tag', 'grp=fuzz'], [FUZZ, ...args, '--unix-dir', asDir], 180_000);
    } finally {
      rmSync(nativeDir, { recursive: true, force: true });
      rmSync(asDir, { recursive: true, force: true });
    }
    expect(nat.code, nat.stderr).toBe(0);
    expect(as.signal, as.stderr).toBeNull();
    expect(as.code, as.stderr).toBe(0);
    expect(as.stdout).toContain(`seed ${SEED}`);
    expect(as.stdout).toMatch(/^done cases=\d+$/m);
    const r = compare(nat.stdout, as.stdout);
    for (const n of Object.values(r.perSyscall)) expect(n).toBe(ITERATIONS);
    expect(Object.keys(r.perSyscall)).toHaveLength(13);
    console.log(`fuzz seed ${SEED}: ${r.cases} cases, ${r.same} identical`);
    for (const [why, n] of r.explained) console.log(`  ${n} explained: ${why}`);
    const shown = r.mismatches.slice(0, 30).map((m) => `${JSON.stringify(m.native)} -> ${m.appswitch?.result ?? 'missing'}`);
    for (const line of shown) console.log(`  MISMATCH ${line}`);
    expect(shown, `seed ${SEED}`).toEqual([]);
    expect(await daemonAnswers()).toBe(true);
    // every descriptor the daemon took for these programs (trap connection, fast-path offers) is given back; the
    // fuzzer closes listeners with fast-path connections still queued, whose offers the daemon holds for 60 s
    await waitFor(() => daemonFds() <= fdsBefore, 75_000, 500);
  }, 400_000);

  it('never lets a racing thread redirect connect()/sendto() to a service the policy refuses', async () => {
    const fdsBefore = daemonFds();
    const allowed = h.run(['--ip', '10.200.0.1', '--tag', 'grp=fuzz'], [FUZZ, 'serve', '--port', '9000', '--id', 'A']);
    const denied = h.run(['--ip', '10.200.0.2', '--tag', 'grp=other'], [FUZZ, 'serve', '--port', '9000', '--id', 'D']);
    const outA = finish(allowed, 120_000);
    const outD = finish(denied, 120_000);
    try {
      await h.waitService('10.200.0.1', 9000, 20_000);
      await h.waitService('10.200.0.2', 9000, 20_000);
      const dropsBefore = await udpBufferDrops();
      const race = await h.runToEnd(
        ['--tag', 'grp=fuzz'],
        [FUZZ, 'race', '--allowed', '10.200.0.1:9000', '--denied', '10.200.0.2:9000', '--iterations', String(Math.min(ITERATIONS, 5000)), '--threads', '2'],
        120_000,
      );
      console.log(race.stdout.trim());
      const tcp = /race tcp ok=(\d+) refused=(\d+) wrong=(\d+) other=(\d+)/.exec(race.stdout);
      const udp = /race udp sent=(\d+) refused=(\d+) other=(\d+)/.exec(race.stdout);
      expect(tcp, race.stdout + race.stderr).not.toBeNull();
      expect(udp, race.stdout + race.stderr).not.toBeNull();
      const [, ok, refused, wrong, other] = (tcp as RegExpExecArray).map(Number);
      expect(wrong).toBe(0);
      expect(other).toBe(0);
      expect(ok).toBeGreaterThan(0); // the flipping really happened both ways: some connects went to each address
      expect(refused).toBeGreaterThan(0);
      killTree(allowed, 'SIGTERM');
      killTree(denied, 'SIGTERM');
      const a = await outA;
      const d = await outD;
      console.log(a.stdout.trim(), '|', d.stdout.trim());
      expect(d.stdout).toMatch(/served D tcp=0 udp=0/);
      const served = /served A tcp=(\d+) udp=(\d+)/.exec(a.stdout);
      expect(served, a.stdout).not.toBeNull();
      expect(Number(served?.[1])).toBe(ok); // every connection that succeeded was the allowed server's
      // and every datagram sent reached A, or was dropped by the kernel because A's receive buffer was full (UDP
      // is lossy under load; a datagram sent anywhere else would be missing from both counts)
      const dropped = (await udpBufferDrops()) - dropsBefore;
      expect(Number(served?.[2]) + dropped).toBe(Number(udp?.[1]));
    } finally {
      killTree(allowed, 'SIGKILL');
      killTree(denied, 'SIGKILL');
    }
    expect(await daemonAnswers()).toBe(true);
    await waitFor(() => daemonFds() <= fdsBefore, 30_000);
  }, 200_000);
});
