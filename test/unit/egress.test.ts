/** Egress: the policy's parser and decider (policy/egress.ts), the routing decision through the trap handler
 * (trap/egress-route.ts: deny, gateways, UDP, no gateway, the asked destination kept with the client report), the
 * peer API's disclosure rule and the target parser of the egress proxy (gateway/egress.ts), the node record's egress
 * fields, and the daemon flags. */
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/daemon/config.js';
import { decodeNodeRecord } from '../../src/daemon/gossip-records.js';
import { AppswitchError, Errno } from '../../src/errors.js';
import { discloseEgress, parseEgressTarget } from '../../src/gateway/egress.js';
import { EgressPolicy, EgressRuleError, parseEgressAllow, parseEgressRules } from '../../src/policy/egress.js';
import { ServiceTable } from '../../src/table/service-table.js';
import type { AppRecord } from '../../src/trap/apps.js';
import { EgressAsked } from '../../src/trap/egress-route.js';
import { type HandlerConfig, TrapHandler } from '../../src/trap/handler.js';
import { decodeSockaddr, encodeSockaddr, MsgFlag, MsgType, SOCK_DGRAM, SOCK_STREAM } from '../../src/trap/protocol.js';
import { handlerConfig } from '../helpers/handler-config.js';
import { request } from '../helpers/trap-request.js';

describe('egress rules: --egress-allow', () => {
  it('parses KEY=VALUE=CIDR and *=CIDR (an address alone is a /32)', () => {
    expect(parseEgressAllow('grp=payments=203.0.113.0/24')).toMatchObject({ tags: { grp: 'payments' }, cidrs: ['203.0.113.0/24'] });
    expect(parseEgressAllow('*=198.51.100.7')).toMatchObject({ cidrs: ['198.51.100.7/32'] });
    expect(parseEgressAllow('*=2001:db8::/32').tags).toBeUndefined();
    expect(parseEgressAllow('k==10.0.0.0/8')).toMatchObject({ tags: { k: '' } });
  });
  it('refuses malformed rules, naming the flag', () => {
    for (const bad of ['', 'grp=pay', '*=notacidr', '=10.0.0.0/8', 'grp=10.0.0.0/8', 'g=p=10.0.0.0/33', 'g=p=1.2.3']) {
      expect(() => parseEgressAllow(bad), bad).toThrow(EgressRuleError);
    }
    expect(() => parseEgressAllow('grp=pay')).toThrow(/--egress-allow grp=pay/);
  });
});

describe('egress rules: --egress-rules FILE', () => {
  it('reads a YAML list of {tags, cidrs} in every tag spelling, and rules: [...]', () => {
    const r = parseEgressRules(
      ['- tags: {grp: pay}', '  cidrs: [203.0.113.0/24, 198.51.100.7]', '- tags: "*"', '  cidrs: 192.0.2.0/24', '- tags: [a=1, b=2]', '  cidrs: ["2001:db8::/48"]'].join('\n'),
      'rules.yaml',
    );
    expect(r.map((x) => [x.tags, x.cidrs, x.source])).toEqual([
      [{ grp: 'pay' }, ['203.0.113.0/24', '198.51.100.7/32'], 'rules.yaml:1'],
      [undefined, ['192.0.2.0/24'], 'rules.yaml:3'],
      [{ a: '1', b: '2' }, ['2001:db8::/48'], 'rules.yaml:5'],
    ]);
    expect(parseEgressRules('rules:\n  - {tags: "k=v", cidrs: [10.1.0.0/16]}\n', 'f.yml')[0]?.tags).toEqual({ k: 'v' });
    expect(parseEgressRules('', 'empty.yaml')).toEqual([]);
  });
  it('reads JSON', () => {
    const r = parseEgressRules('[\n  {"tags": {"grp": "pay"}, "cidrs": ["203.0.113.0/24"]}\n]', 'r.json');
    expect(r[0]).toMatchObject({ tags: { grp: 'pay' }, cidrs: ['203.0.113.0/24'], source: 'r.json:2' });
  });
  it('names file:line of the bad rule', () => {
    const cases: Array<[string, RegExp]> = [
      ['- tags: {grp: pay}\n  cidrs: [203.0.113.0/24]\n- tags: {grp: web}\n  cidrs: [nonsense]\n', /^f:3: "nonsense" is not a CIDR/],
      ['- tags: {grp: pay}\n  cidrs: [1.2.3.0/24]\n  port: 80\n', /^f:1: unknown key "port"/],
      ['- cidrs: [1.2.3.0/24]\n', /^f:1: a rule needs tags/],
      ['- tags: "*"\n', /^f:1: a rule needs cidrs/],
      ['- tags: "*"\n  cidrs: []\n', /^f:1: a rule needs cidrs/],
      ['- tags: grp\n  cidrs: [1.2.3.0/24]\n', /^f:1: tag "grp" is not K=V/],
      ['- tags: {}\n  cidrs: [1.2.3.0/24]\n', /^f:1: tags is empty/],
      ['\n\nfoo: bar\n', /^f:3: expected a list of rules/],
      ['- tags: "*"\n  cidrs: [1.2.3.0/24\n', /^f:\d+: /],
      ['[{"tags": "*", "cidrs": ["1.2.3.4"]},\n {"tags": "*", "cidrs": [42]}]', /^f:2: cidr 42 is not a string/],
    ];
    for (const [text, re] of cases) expect(() => parseEgressRules(text, 'f'), text).toThrow(re);
  });
});

describe('EgressPolicy', () => {
  it('no rule at all allows everything', () => {
    const p = new EgressPolicy([]);
    expect(p.restricts).toBe(false);
    expect(p.decide({ grp: 'x' }, '203.0.113.9').allow).toBe(true);
  });
  it('allows when a rule matches both the tags and the address; denies otherwise', () => {
    const p = new EgressPolicy([parseEgressAllow('grp=pay=203.0.113.0/24'), parseEgressAllow('*=198.51.100.7'), parseEgressAllow('zone=default=192.0.2.0/24')]);
    expect(p.decide({ grp: 'pay' }, '203.0.113.9').allow).toBe(true);
    expect(p.decide({ grp: 'pay', env: 'prod' }, '203.0.113.9').allow).toBe(true);
    expect(p.decide({ grp: 'web' }, '203.0.113.9')).toEqual({ allow: false, reason: 'no egress rule matches the app and the destination' });
    expect(p.decide({ grp: 'pay' }, '203.0.114.1').allow).toBe(false);
    expect(p.decide({ grp: 'web' }, '198.51.100.7').allow).toBe(true); /* * = every app */
    expect(p.decide({ grp: 'web' }, '198.51.100.8').allow).toBe(false);
    expect(p.decide({}, '192.0.2.50').allow).toBe(true); /* no tags: judged as zone=default */
    expect(p.decide({ grp: 'pay' }, '::ffff:203.0.113.9').allow).toBe(true); /* v4-mapped is the IPv4 address */
    expect(p.decide({ grp: 'pay' }, '2001:db8::1').allow).toBe(false);
    expect(p.decide({ grp: 'pay' }, 'not-an-ip').allow).toBe(false);
  });
  it('a rule with several tags needs all of them', () => {
    const [r] = parseEgressRules('- tags: {grp: pay, env: prod}\n  cidrs: [203.0.113.0/24]\n', 'f');
    const p = new EgressPolicy([r!]);
    expect(p.decide({ grp: 'pay' }, '203.0.113.1').allow).toBe(false);
    expect(p.decide({ grp: 'pay', env: 'prod' }, '203.0.113.1').allow).toBe(true);
  });
});

const GW = { ip: '192.0.2.9', port: 7949 };

function setup(egress: HandlerConfig['egress'], tags: Record<string, string> = {}): { h: TrapHandler; app: AppRecord } {
  const h = new TrapHandler(handlerConfig(new ServiceTable(), { egress, forbidden: (ip, port) => (ip === GW.ip && port === GW.port ? 'egress' : undefined) }));
  const app = h.hello({ tags, cmd: ['x'] }, 1, 0);
  if (typeof app === 'string') throw new Error(app);
  return { h, app };
}

function connect(h: TrapHandler, app: AppRecord, ip: string, port: number, udp = false, cookie = 77n) {
  const m = request('connect', { type: MsgType.CONNECT, seq: 1, arg: udp ? SOCK_DGRAM : SOCK_STREAM, addr: encodeSockaddr({ ip, port }), cookie });
  const r = h.connect(app, m);
  return { ...r, to: r.addr ? decodeSockaddr(r.addr) : undefined, seen: r.addr2 ? decodeSockaddr(r.addr2) : undefined };
}

describe('egress routing (trap handler)', () => {
  const via = (rules: string[] = [], gateways = [GW]): NonNullable<HandlerConfig['egress']> => ({
    policy: new EgressPolicy(rules.map(parseEgressAllow)),
    mode: 'via-gateway',
    isGateway: false,
    gateways: () => gateways,
    exempt: (ip, port) => ip === '192.0.2.1' && port === 53,
  });

  it('denied by the egress policy: ECONNREFUSED for a connect, EPERM for a datagram, counted', () => {
    const { h, app } = setup({ ...via(['grp=pay=203.0.113.0/24']), mode: 'direct' }, { grp: 'web' });
    expect(connect(h, app, '203.0.113.5', 443).result).toBe(-Errno.ECONNREFUSED);
    expect(connect(h, app, '203.0.113.5', 53, true).result).toBe(-Errno.EPERM);
    expect(h.stats.egressDenied).toBe(2);
    expect(connect(h, app, '10.0.0.9', 80).result).toBe(-Errno.ECONNREFUSED); /* a vip: not egress */
    expect(h.stats.egressDenied).toBe(2);
    expect(connect(h, app, '192.0.2.1', 53, true).result).toBe(0); /* this node's DNS: the resolver path */
  });

  it('allowed in direct mode: reached directly, as before', () => {
    const { h, app } = setup({ ...via(['grp=pay=203.0.113.0/24']), mode: 'direct' }, { grp: 'pay' });
    const r = connect(h, app, '203.0.113.5', 443);
    expect(r.to).toEqual({ ip: '203.0.113.5', port: 443 });
    expect(r.seen).toBeUndefined();
  });

  it('via-gateway: the gateway egress endpoint is the real address, the asked destination the one the program sees', () => {
    const { h, app } = setup(via());
    const r = connect(h, app, '198.51.100.10', 8080);
    expect(r.result).toBe(0);
    expect(r.to).toEqual(GW);
    expect(r.seen).toEqual({ ip: '198.51.100.10', port: 8080 });
    expect(r.flags).toBe(MsgFlag.EGRESS); /* the generator names this socket's peer alone (native/peermap.h) */
    expect(h.stats.egressViaGateway).toBe(1);
  });

  it('via-gateway: round robin over the live gateways', () => {
    const gws = [GW, { ip: '192.0.2.10', port: 7949 }];
    const { h, app } = setup(via([], gws));
    const picks = [1, 2, 3, 4].map(() => connect(h, app, '198.51.100.10', 80).to?.ip);
    expect(picks).toEqual(['192.0.2.9', '192.0.2.10', '192.0.2.9', '192.0.2.10']);
  });

  it('via-gateway: no live gateway is ENETUNREACH; a datagram is EPERM; both counted', () => {
    const { h, app } = setup(via([], []));
    expect(connect(h, app, '198.51.100.10', 80).result).toBe(-Errno.ENETUNREACH);
    expect(h.stats.egressNoGateway).toBe(1);
    const g = setup(via());
    expect(connect(g.h, g.app, '198.51.100.10', 53, true).result).toBe(-Errno.EPERM);
    expect(g.h.stats.egressUdpRefused).toBe(1);
  });

  it("via-gateway on an egress gateway itself: direct", () => {
    const { h, app } = setup({ ...via(), isGateway: true });
    expect(connect(h, app, '198.51.100.10', 80).to).toEqual({ ip: '198.51.100.10', port: 80 });
  });

  it("a daemon's door stays closed first (the gateway's egress port named directly)", () => {
    const { h, app } = setup(via());
    expect(connect(h, app, GW.ip, GW.port).result).toBe(-Errno.ECONNREFUSED);
    expect(h.stats.daemonPortRefused).toBe(1);
    expect(h.stats.egressViaGateway).toBe(0);
  });

  it('the asked destination goes with the client report of that socket (CONNECTED), once', async () => {
    const { h, app } = setup(via());
    connect(h, app, '198.51.100.10', 8080, false, 4242n);
    const local = { ip: '192.0.2.1', port: 41000 };
    h.connected(app, request('connected', { type: MsgType.CONNECTED, addr: encodeSockaddr(local), addr2: encodeSockaddr(GW), cookie: 4242n }));
    const who = await h.identifyLocal('192.0.2.1:41000', `${GW.ip}:${GW.port}`);
    expect(who).toMatchObject({ appId: app.id, egress: '198.51.100.10:8080' });
    /* another socket of the app: no asked destination */
    h.connected(app, request('connected', { type: MsgType.CONNECTED, addr: encodeSockaddr({ ...local, port: 41001 }), addr2: encodeSockaddr(GW), cookie: 4242n }));
    expect((await h.identifyLocal('192.0.2.1:41001', `${GW.ip}:${GW.port}`))?.egress).toBeUndefined();
  });
});

describe('EgressAsked', () => {
  it('is taken once, per app and socket, and forgets after its TTL', () => {
    const a = new EgressAsked();
    a.put('app', '1', { ip: '203.0.113.1', port: 1 }, 0);
    expect(a.take('other', '1', 1)).toBeUndefined();
    expect(a.take('app', '1', 1)).toEqual({ ip: '203.0.113.1', port: 1 });
    expect(a.take('app', '1', 1)).toBeUndefined();
    a.put('app', '2', { ip: '203.0.113.1', port: 1 }, 0);
    expect(a.take('app', '2', 31_000)).toBeUndefined();
  });
});

describe('the peer API tells the egress destination only to its gateway', () => {
  const c = { identity: '169.254.1.1', appId: 'a', tags: {}, egress: '198.51.100.10:8080' };
  const nodes = [
    { address: '192.0.2.9', state: 'alive', record: { egressGateway: true, egressPort: 7949 } },
    { address: '192.0.2.10', state: 'alive', record: {} },
    { address: '192.0.2.11', state: 'dead', record: { egressGateway: true, egressPort: 7949 } },
    { address: '192.0.2.12', state: 'alive', record: { egressGateway: true, egressPort: 7949 } },
  ];
  it('the live gateway whose egress endpoint the connection went to learns it', () => {
    expect(discloseEgress(c, '192.0.2.9:7949', '192.0.2.9', nodes).egress).toBe('198.51.100.10:8080');
  });
  it('attack: another member, a dead gateway, another gateway, the wrong port or no dst learn the identity alone', () => {
    for (const [dst, asker] of [
      ['192.0.2.9:7949', '192.0.2.10'],
      ['192.0.2.11:7949', '192.0.2.11'],
      ['192.0.2.9:7949', '192.0.2.12'],
      ['192.0.2.9:7950', '192.0.2.9'],
      [undefined, '192.0.2.9'],
      ['192.0.2.9:7949', undefined],
    ] as const) {
      const r = discloseEgress(c, dst, asker, nodes);
      expect(r.egress, `${dst} ${asker}`).toBeUndefined();
      expect(r.appId).toBe('a');
    }
  });
});

describe('parseEgressTarget', () => {
  it('accepts ip:port, canonical; refuses anything else', () => {
    expect(parseEgressTarget('198.51.100.10:8080')).toEqual({ ip: '198.51.100.10', port: 8080 });
    expect(parseEgressTarget('2001:db8::1:443')).toEqual({ ip: '2001:db8::1', port: 443 });
    expect(parseEgressTarget('[2001:db8::1]:443')).toEqual({ ip: '2001:db8::1', port: 443 });
    for (const bad of ['', '198.51.100.10', 'host:80', '1.2.3:80', '1.2.3.4:0', '1.2.3.4:70000', '1.2.3.4:8x', ':80']) expect(parseEgressTarget(bad), bad).toBeUndefined();
  });
});

describe('node record: egress fields', () => {
  const rec = (o: Record<string, unknown>) => decodeNodeRecord(Buffer.from(JSON.stringify({ ports: { low: 40000, high: 40010 }, gossipPort: 7946, peerPort: 7947, dnsPort: 53, ...o })));
  it('decodes egressGateway and egressPort', () => {
    expect(rec({ egressGateway: true, egressPort: 7949 })).toMatchObject({ ok: true, value: { egressGateway: true, egressPort: 7949 } });
    const plain = rec({});
    expect(plain.ok).toBe(true);
    expect(plain.ok ? plain.value.egressGateway : 'rejected').toBeUndefined();
  });
  it('rejects bad values', () => {
    expect(rec({ egressGateway: 'yes', egressPort: 7949 }).ok).toBe(false);
    expect(rec({ egressGateway: true, egressPort: 0 }).ok).toBe(false);
    expect(rec({ egressGateway: true }).ok).toBe(false);
  });
});

describe('daemon flags', () => {
  const cfg = (f: Parameters<typeof resolveConfig>[0]) => resolveConfig({ nodeAddress: '192.0.2.1', dnsServers: ['192.0.2.53'], ...f });
  it('defaults: direct, port 7949, not a gateway, no rules', () => {
    expect(cfg({})).toMatchObject({ egressMode: 'direct', egressPort: 7949, egressGateway: false, egressRules: [] });
  });
  it('refuses bad values with ERR_CONFIG', () => {
    for (const f of [{ egress: 'proxy' }, { egressPort: '0' }, { egressAllow: ['grp=pay'] }, { egressGateway: true, egressPort: '7947' }, { egressGateway: true, egressPort: '40001', ports: '40000-40010' }, { egressRules: '/nonexistent/rules.yaml' }]) {
      let err: unknown;
      try {
        cfg(f);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(f)).toBeInstanceOf(AppswitchError);
      expect((err as AppswitchError).code).toBe('ERR_CONFIG');
    }
  });
});
