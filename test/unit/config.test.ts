/** The daemon's YAML config file: keys from the `daemon` command's options, every error kind names file, line
 * and key, command-line flags override the file. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { annotate, applyConfigFile, configKeys } from '../../src/cli/daemon-config.js';
import { buildCli } from '../../src/cli/main.js';
import { parseConfigText } from '../../src/daemon/config-file.js';
import { resolveConfig, type DaemonFlags } from '../../src/daemon/config.js';
import { AppswitchError } from '../../src/errors.js';

/** A fresh CLI whose daemon command does nothing when parsed (so parsing the options is all that happens). */
function daemonCommand(): { program: Command; daemon: Command } {
  const program = buildCli();
  const daemon = program.commands.find((c) => c.name() === 'daemon') as Command;
  daemon.action(() => undefined);
  program.exitOverride();
  return { program, daemon };
}

const keys = configKeys(daemonCommand().daemon);

function errorOf(text: string): AppswitchError {
  try {
    parseConfigText(text, 'c.yaml', keys);
  } catch (e) {
    expect(e).toBeInstanceOf(AppswitchError);
    expect((e as AppswitchError).code).toBe('ERR_CONFIG');
    return e as AppswitchError;
  }
  throw new Error(`accepted: ${text}`);
}

const dir = mkdtempSync(path.join(tmpdir(), 'appswitch-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('config keys', () => {
  it('are the daemon flags: long names, no --config, negated booleans under their positive name', () => {
    const names = keys.map((k) => k.key);
    expect(names).toContain('node-address');
    expect(names).toContain('vip-cidr');
    expect(names).toContain('fastpath');
    expect(names).not.toContain('no-fastpath');
    expect(names).not.toContain('config');
    expect(keys.find((k) => k.key === 'vip-cidr')?.kind).toBe('list');
    expect(keys.find((k) => k.key === 'join')?.kind).toBe('list');
    expect(keys.find((k) => k.key === 'fastpath')?.kind).toBe('boolean');
    expect(keys.find((k) => k.key === 'dns-port')?.kind).toBe('value');
    expect(keys.find((k) => k.key === 'lb')?.choices).toContain('p2c');
  });

  it('follow a flag added to the command, with no other edit', () => {
    const { daemon } = daemonCommand();
    daemon.option('--some-new-flag <n>', 'a flag from another change', '3');
    const v = parseConfigText('some-new-flag: 7\n', 'c.yaml', configKeys(daemon));
    expect(v.get('someNewFlag')?.value).toBe('7');
  });
});

describe('parseConfigText', () => {
  it('reads a good file: scalars, numbers as text, lists, booleans, comments', () => {
    const v = parseConfigText(
      [
        '# appswitch daemon',
        'node-address: 192.0.2.1',
        'vip-cidr:',
        '  - 10.0.0.0/8',
        '  - 172.30.0.0/16',
        'join: [192.0.2.2, 192.0.2.3:7946]',
        'dns-port: 5353',
        'fastpath: false',
        'gossip-profile: local',
        'dns-servers: 192.0.2.53',
      ].join('\n'),
      'c.yaml',
      keys,
    );
    expect(v.get('nodeAddress')).toMatchObject({ value: '192.0.2.1', line: 2, key: 'node-address' });
    expect(v.get('vipCidr')).toMatchObject({ value: ['10.0.0.0/8', '172.30.0.0/16'], line: 4 });
    expect(v.get('join')?.value).toEqual(['192.0.2.2', '192.0.2.3:7946']);
    expect(v.get('dnsPort')?.value).toBe('5353');
    expect(v.get('fastpath')?.value).toBe(false);
    expect(v.get('gossipProfile')?.value).toBe('local');
    expect(v.get('dnsServers')?.value).toEqual(['192.0.2.53']); /* one scalar for a list key */
    const flags = Object.fromEntries([...v.values()].map((x) => [x.attr, x.value])) as DaemonFlags;
    const cfg = resolveConfig(flags);
    expect(cfg.vipCidrs).toEqual(['10.0.0.0/8', '172.30.0.0/16']);
    expect(cfg.fastpath).toBe(false);
    expect(cfg.dnsPort).toBe(5353);
  });

  it('an empty file (or only comments) is an empty config', () => {
    expect(parseConfigText('', 'c.yaml', keys).size).toBe(0);
    expect(parseConfigText('# nothing\n', 'c.yaml', keys).size).toBe(0);
  });

  it('YAML syntax error: file and line', () => {
    const e = errorOf('node-address: 192.0.2.1\nvip-cidr: [10.0.0.0/8\nlb: p2c\n');
    expect(e.message).toMatch(/^c\.yaml:\d+: YAML syntax error/);
    expect(errorOf('lb: p2c\nports: 1000-2000\n\tdns-port: 53\n').message).toBe('c.yaml:3: YAML syntax error: Tabs are not allowed as indentation');
    expect(errorOf('lb: p2c\nports: 1000-2000\nnode-name: a: b\n').message).toMatch(/^c\.yaml:3: YAML syntax error: Nested mappings/);
  });

  it('duplicate key: its second line', () => {
    expect(errorOf('lb: p2c\nports: 1000-2000\nlb: random\n').message).toMatch(/^c\.yaml:3: duplicate key/);
  });

  it('unknown key: line, key and a suggestion', () => {
    const e = errorOf('node-address: 192.0.2.1\n\nnode-adress: 192.0.2.2\n');
    expect(e.message).toMatch(/^c\.yaml:3: unknown key "node-adress" \(did you mean "node-address"\?\)/);
    expect(errorOf('config: /etc/x.yaml\n').message).toMatch(/^c\.yaml:1: unknown key "config"/);
    expect(errorOf('no-fastpath: true\n').message).toMatch(/^c\.yaml:1: unknown key "no-fastpath" \(did you mean "fastpath"\?\)/);
  });

  it('wrong type: line and key', () => {
    expect(errorOf('lb: p2c\nfastpath: "no"\n').message).toBe('c.yaml:2: fastpath: expected true or false, got a string ("no")');
    expect(errorOf('dns-port:\n  a: 1\n').message).toMatch(/^c\.yaml:2: dns-port: expected a string or number, got a map/);
    expect(errorOf('node-name: true\n').message).toMatch(/^c\.yaml:1: node-name: expected a string or number, got a boolean/);
    expect(errorOf('node-name:\n').message).toMatch(/^c\.yaml:1: node-name: expected a string or number, got nothing/);
    expect(errorOf('join:\n  - 192.0.2.2\n  - [x]\n').message).toMatch(/^c\.yaml:3: join: expected a list of strings, got an item that is a list/);
  });

  it('invalid value: line, key and why (the same check the daemon makes)', () => {
    expect(errorOf('lb: p2c\ndns-port: 99999\n').message).toBe('c.yaml:2: dns-port: 99999 is not a port');
    expect(errorOf('vip-cidr:\n  - 10.0.0.0/8\n  - 10.0.0.0/99\n').message).toMatch(/^c\.yaml:2: vip-cidr: 10\.0\.0\.0\/99 is not a CIDR/);
    expect(errorOf('node-address: not-an-ip\n').message).toMatch(/^c\.yaml:1: node-address: not-an-ip is not an IP address/);
    expect(errorOf('lb: fastest\n').message).toBe('c.yaml:1: lb: "fastest" is not one of random, round-robin, least-conn, p2c');
    expect(errorOf('ports: 9-3\n').message).toMatch(/^c\.yaml:1: ports: /);
  });

  it('a top level that is not a map', () => {
    expect(errorOf('- a\n- b\n').message).toMatch(/^c\.yaml:1: the file must be a map/);
    expect(errorOf('just text\n').message).toMatch(/^c\.yaml:1: the file must be a map/);
  });
});

describe('applyConfigFile', () => {
  it('fills options from the file; command-line flags win; no --config reads nothing', () => {
    const file = path.join(dir, 'a.yaml');
    writeFileSync(file, 'node-address: 192.0.2.1\ndns-port: 5353\nvip-cidr: [10.1.0.0/16]\nfastpath: false\nlb: random\n');
    const { program, daemon } = daemonCommand();
    program.parse(['node', 'appswitch', 'daemon', '--config', file, '--dns-port', '53', '--vip-cidr', '10.2.0.0/16'], { from: 'node' });
    const { opts, values } = applyConfigFile(daemon);
    expect(opts.nodeAddress).toBe('192.0.2.1');
    expect(opts.dnsPort).toBe('53');
    expect(opts.vipCidr).toEqual(['10.2.0.0/16']); /* replaced, not appended */
    expect(opts.fastpath).toBe(false);
    expect(opts.lb).toBe('random');
    expect(daemon.getOptionValueSource('lb')).toBe('config');
    expect(values.get('nodeAddress')?.line).toBe(1);

    const plain = daemonCommand();
    plain.program.parse(['node', 'appswitch', 'daemon', '--dns-port', '54'], { from: 'node' });
    const r = applyConfigFile(plain.daemon);
    expect(r.values.size).toBe(0);
    expect(r.opts.lb).toBe('p2c');
  });

  it('a missing file is a clear error', () => {
    const { program, daemon } = daemonCommand();
    program.parse(['node', 'appswitch', 'daemon', '--config', path.join(dir, 'none.yaml')], { from: 'node' });
    expect(() => applyConfigFile(daemon)).toThrow(/cannot read config file .*none\.yaml: ENOENT/);
  });

  it('annotate() names the line of a flag from the file in a later error', () => {
    const values = parseConfigText('lb: p2c\ndns-port: 53\n', 'c.yaml', keys);
    const e = annotate(new AppswitchError('ERR_CONFIG', '--dns-port 53 is in use'), 'c.yaml', values) as Error;
    expect(e.message).toBe('c.yaml:2: --dns-port 53 is in use');
  });
});

describe('--relay-workers', () => {
  const cfg = (f: DaemonFlags): ReturnType<typeof resolveConfig> => resolveConfig({ nodeAddress: '192.0.2.1', dnsServers: ['192.0.2.53'], ...f });
  it("unset: the relay's own default; set on a gateway: that many", () => {
    expect(cfg({ gateway: true }).relayWorkers).toBeUndefined();
    expect(cfg({ gateway: true, relayWorkers: '3' }).relayWorkers).toBe(3);
    expect(cfg({ gateway: true, relayWorkers: 8 }).relayWorkers).toBe(8);
  });
  it('refuses what is not 1-8, and a node that is no gateway, with ERR_CONFIG', () => {
    for (const v of ['0', '9', '2.5', 'two', '-1']) {
      expect(() => cfg({ gateway: true, relayWorkers: v }), v).toThrow(`--relay-workers ${v} must be an integer from 1 to 8`);
    }
    expect(() => cfg({ relayWorkers: '2' })).toThrow('--relay-workers needs --gateway');
    expect(() => cfg({ relayWorkers: '2' })).toThrow(AppswitchError);
  });
  it('is a config file key too, checked there as on the command line', () => {
    expect(parseConfigText('gateway: true\nrelay-workers: 2\n', 'c.yaml', keys).get('relayWorkers')?.value).toBe('2');
    expect(errorOf('gateway: true\nrelay-workers: 12\n').message).toBe('c.yaml:2: relay-workers: 12 must be an integer from 1 to 8');
  });
  it('a key that needs another is not refused alone in the file (gateway-address, relay-workers need gateway)', () => {
    const v = parseConfigText('relay-workers: 2\ngateway-address: 192.0.2.7\ngateway: true\n', 'c.yaml', keys);
    expect(v.get('gatewayAddress')?.value).toBe('192.0.2.7');
    expect(v.get('relayWorkers')?.value).toBe('2');
  });
  it('nor are api-token-file and a non-loopback api-address, which need each other', () => {
    const v = parseConfigText('api-token-file: /etc/appswitch/token\napi-address: 192.0.2.7:6463\n', 'c.yaml', keys);
    expect(v.get('apiTokenFile')?.value).toBe('/etc/appswitch/token');
    expect(v.get('apiAddress')?.value).toBe('192.0.2.7:6463');
    /* a value bad in itself is still refused with its line */
    expect(errorOf('api-address: nowhere\n').message).toMatch(/^c\.yaml:1: api-address: nowhere is not ADDR:PORT/);
  });
});
