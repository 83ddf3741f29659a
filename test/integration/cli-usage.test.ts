/** The command line against a real daemon (issue 11, item 9): usage errors exit 125 like appswitch's other failures,
 * `--socket` works before the subcommand, a tag needs its '=', the network and broadcast addresses of a vip range are
 * refused as --ip, and the daemon logs a program's end as an exit code or a signal. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, TestHost, waitFor } from '../helpers/hosts.js';

let h: TestHost;

beforeAll(async () => {
  h = TestHost.create('cli');
  await h.startDaemon();
});

afterAll(async () => {
  await h?.destroy();
});

/** The daemon's "program exited" log lines (JSON). */
function exits(): Array<Record<string, unknown>> {
  return h.daemonLog
    .split('\n')
    .filter((l) => l.includes('"program exited"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('command line', () => {
  it('usage errors exit 125; --help and --version exit 0', async () => {
    for (const args of [['run', '--no-such-flag', '--', 'true'], ['status', '--nope'], ['no-such-command'], ['get'], ['run', '--tag']]) {
      const r = await h.cli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(125);
      expect(r.stderr).toMatch(/^(error: |Usage: )/); /* a command without its subcommand prints its help */
    }
    for (const args of [['--help'], ['--version'], ['run', '--help'], ['help']]) expect((await h.cli(args)).code, args.join(' ')).toBe(0);
  });

  it('takes --socket before the subcommand, where it wins over APPSWITCH_SOCKET', async () => {
    const env = { APPSWITCH_SOCKET: '/nonexistent/appswitch.sock' };
    const before = await h.exec(['node', CLI, '--socket', h.socket, 'status', '--json'], 15_000, { env });
    expect(before.code, before.stderr).toBe(0);
    expect(JSON.parse(before.stdout)).toMatchObject({ nodeAddress: h.address });
    expect((await h.exec(['node', CLI, '--socket', h.socket, 'get', 'apps'], 15_000, { env })).code).toBe(0);
    // the one after the subcommand wins over the one before
    const both = await h.exec(['node', CLI, '--socket', '/nonexistent/x.sock', 'status', '--socket', h.socket], 15_000, { env });
    expect(both.code, both.stderr).toBe(0);
    const daemon = await h.exec(['node', CLI, '--socket', h.socket, 'daemon'], 15_000);
    expect(daemon.code).toBe(125);
    expect(daemon.stderr).toContain("--socket does not apply to 'appswitch daemon'");
  });

  it('refuses --tag KEY without "=" and accepts KEY= (an empty value)', async () => {
    const bad = await h.runToEnd(['--tag', 'grp'], ['true']);
    expect(bad.code).toBe(125);
    expect(bad.stderr).toBe('appswitch: bad tag "grp": expected KEY=VALUE (KEY= for an empty value)\n');
    expect((await h.runToEnd(['--tag', 'grp='], ['true'])).code).toBe(0);
  });

  it("refuses the vip range's network and broadcast addresses as --ip", async () => {
    for (const [ip, kind] of [
      ['10.0.0.0', 'network'],
      ['10.255.255.255', 'broadcast'],
    ]) {
      const r = await h.runToEnd(['--ip', ip as string], ['true']);
      expect(r.code, r.stderr).toBe(125);
      expect(r.stderr).toContain(`--ip ${ip} is the ${kind} address of the virtual range 10.0.0.0/8`);
    }
    expect((await h.runToEnd(['--ip', '10.255.255.254'], ['true'])).code).toBe(0);
  });

  it('logs "program exited" with the exit code, or the signal, not a raw wait status', async () => {
    const code = await h.runToEnd([], ['sh', '-c', 'exit 3']);
    expect(code.code).toBe(3);
    const killed = await h.runToEnd([], ['sh', '-c', 'kill -KILL $$']);
    expect(killed.code).toBe(128 + 9);
    await waitFor(() => exits().some((l) => l.exitCode === 3) && exits().some((l) => l.signal === 'SIGKILL'), 15_000, 100);
    for (const l of exits()) {
      expect(l).not.toHaveProperty('status');
      expect('exitCode' in l || 'signal' in l, JSON.stringify(l)).toBe(true);
    }
    expect(exits().find((l) => l.signal === 'SIGKILL')).toMatchObject({ coreDumped: false });
  });
});
