/** Small command-line and naming rules (issue 11, item 9): option help states each default once and unquoted, a tag
 * needs its '=', network and broadcast addresses of a range are no app's address, and a program's end is logged as
 * an exit code or a signal, not a raw wait status. */
import { describe, expect, it } from 'vitest';
import { buildCli } from '../../src/cli/main.js';
import { optionDescription } from '../../src/cli/usage.js';
import { rangeEdge } from '../../src/table/addresses.js';
import { parseTags } from '../../src/trap/apps.js';
import { decodeWaitStatus } from '../../src/trap/wait-status.js';

describe('option help', () => {
  const program = buildCli();
  const commands = [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)];

  it('states every default at most once, unquoted, and never as [] for a repeatable option', () => {
    let checked = 0;
    for (const cmd of commands) {
      for (const o of cmd.options) {
        const text = optionDescription(o);
        expect((text.match(/default/gi) ?? []).length, `${cmd.name()} ${o.flags}: ${text}`).toBeLessThanOrEqual(1);
        expect(text, `${cmd.name()} ${o.flags}`).not.toMatch(/"|\[\]/);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(40);
  });

  it('shows the defaults the daemon uses', () => {
    const daemon = commands.find((c) => c.name() === 'daemon');
    const text = (flag: string): string => {
      const o = daemon?.options.find((x) => x.long === flag);
      if (!o) throw new Error(`no ${flag}`);
      return optionDescription(o);
    };
    expect(text('--ports')).toBe('host port pool for servers under appswitch (default: 40000-60000)');
    expect(text('--state-dir')).toBe('directory of the control and trap sockets (default: /run/appswitch)');
    expect(text('--vip-cidr')).toBe('virtual IP range (repeatable; default 10.0.0.0/8)');
    expect(text('--gossip-profile')).toBe('gossip timing profile (one of lan, wan, local; default: lan)');
    expect(text('--node-name')).toContain('(default: HOSTNAME-NODEADDRESS)');
    expect(daemon?.helpInformation()).toContain('(default: 40000-60000)'); /* what --help prints uses it */
  });
});

describe('tags', () => {
  it('refuses a tag without "=", and takes KEY= as an empty value', () => {
    expect(() => parseTags(['grp'])).toThrow(/bad tag "grp": expected KEY=VALUE \(KEY= for an empty value\)/);
    expect(parseTags(['grp='])).toEqual({ grp: '' });
    expect(parseTags(['grp=1', 'zone='])).toEqual({ grp: '1', zone: '' });
  });
});

describe('range edges', () => {
  it('names the network and broadcast address of an IPv4 range; /31, /32 and IPv6 have none', () => {
    expect(rangeEdge(['10.0.0.0/8'], '10.0.0.0')).toEqual({ kind: 'network', cidr: '10.0.0.0/8' });
    expect(rangeEdge(['10.0.0.0/8'], '10.255.255.255')).toEqual({ kind: 'broadcast', cidr: '10.0.0.0/8' });
    expect(rangeEdge(['10.0.0.0/8'], '10.0.0.1')).toBeUndefined();
    expect(rangeEdge(['10.0.0.0/8'], '10.255.255.254')).toBeUndefined();
    expect(rangeEdge(['10.0.0.0/8', '172.20.0.0/24'], '172.20.0.255')).toEqual({ kind: 'broadcast', cidr: '172.20.0.0/24' });
    expect(rangeEdge(['10.0.0.0/8'], '::ffff:10.0.0.0')).toEqual({ kind: 'network', cidr: '10.0.0.0/8' });
    expect(rangeEdge(['10.9.9.8/31'], '10.9.9.8')).toBeUndefined();
    expect(rangeEdge(['10.9.9.9/32'], '10.9.9.9')).toBeUndefined();
    expect(rangeEdge(['fd00::/64'], 'fd00::')).toBeUndefined();
    expect(rangeEdge(['10.0.0.0/8'], '192.0.2.0')).toBeUndefined();
  });
});

describe('wait status', () => {
  it('is an exit code or a signal', () => {
    expect(decodeWaitStatus(0)).toEqual({ exitCode: 0 });
    expect(decodeWaitStatus(3 << 8)).toEqual({ exitCode: 3 });
    expect(decodeWaitStatus(255 << 8)).toEqual({ exitCode: 255 });
    expect(decodeWaitStatus(9)).toEqual({ signal: 'SIGKILL', coreDumped: false });
    expect(decodeWaitStatus(0x80 | 11)).toEqual({ signal: 'SIGSEGV', coreDumped: true });
    expect(decodeWaitStatus((19 << 8) | 0x7f)).toEqual({ waitStatus: (19 << 8) | 0x7f }); /* stopped: neither */
    expect(decodeWaitStatus(-1)).toEqual({ waitStatus: -1 });
  });
});
