/** The operator's commands: `appswitch get apps|services|members|connections`, `appswitch status`,
 * `appswitch version`. Text output is a table that fits the terminal (80 columns when not a terminal); `--json`
 * output is a JSON array (status: object) whose objects always carry exactly the keys listed in JSON_KEYS, null
 * where a value is unknown: scripts may rely on them (README, "Operations"). */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import type { AppView, ConnectionView, MemberView, ServiceView, StatusResult } from '../daemon/control-protocol.js';
import { VERSION } from '../daemon/version.js';
import { AppswitchError } from '../errors.js';
import { request, resolveSocket } from './client.js';
import { age, fixedKeys, table, tagsText } from './format.js';

/** The keys of each `--json` row, in order. Adding a key is allowed; removing or renaming one is not. */
export const JSON_KEYS = {
  apps: ['id', 'pid', 'ip', 'identity', 'name', 'tags', 'cmd', 'startedAt', 'services', 'owner'],
  services: ['vip', 'port', 'proto', 'name', 'endpoint', 'node', 'app', 'tags'],
  members: ['name', 'address', 'state', 'incarnation'],
  connections: [
    'direction',
    'path',
    'client',
    'clientApp',
    'clientEndpoint',
    'service',
    'endpoint',
    'serverApp',
    'serverNode',
    'accepted',
    'since',
    'ageSeconds',
  ],
  status: [
    'version',
    'node',
    'nodeAddress',
    'uptimeSeconds',
    'members',
    'memberStates',
    'nameConflicts',
    'apps',
    'services',
    'traps',
    'trapsPerSecond',
    'trapMessages',
    'refused',
    'denied',
    'retried',
    'unidentified',
    'udpUnidentified',
    'pendingOffers',
    'awaitingReconnect',
    'daemonPortRefused',
    'egressDenied',
    'egress',
    'limitsReached',
    'internalErrors',
    'steering',
    'connections',
    'openConnections',
    'fastpath',
    'group',
    'vipCidrs',
    'ports',
    'dnsDomain',
    'trapSocket',
    'resolvConf',
    'externalRefused',
    'ingress',
    'private',
    'owner',
  ],
} as const;

interface CommonOpts {
  json?: boolean;
  socket?: string;
}

function width(): number {
  return process.stdout.isTTY && process.stdout.columns ? process.stdout.columns : 80;
}

function print(text: string): void {
  process.stdout.write(text + '\n');
}

function printRows<T extends object>(json: boolean, rows: T[], keys: readonly string[], text: () => string): void {
  print(json ? JSON.stringify(rows.map((r) => fixedKeys(r, keys)), null, 2) : text());
}

function fail(e: unknown): never {
  process.stderr.write(`appswitch: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(125);
}

function withSocket(c: Command): Command {
  return c.option('--json', 'machine-readable output (stable keys, see README)').option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)');
}

/** Seccomp features appswitch uses and the kernel release that brought each (seccomp_unotify(2), seccomp(2)). */
const SECCOMP_FEATURES: Array<[string, number, number]> = [
  ['SECCOMP_RET_USER_NOTIF', 5, 0],
  ['pidfd_getfd', 5, 6],
  ['NOTIF_ADDFD', 5, 9],
  ['ADDFD_FLAG_SEND', 5, 14],
  ['WAIT_KILLABLE_RECV', 5, 19],
  ['SYNC_WAKE_UP', 6, 6],
];

export interface VersionInfo {
  version: string;
  node: string;
  kernel: string;
  arch: string;
  /** From /proc/sys/kernel/seccomp/actions_avail: whether the kernel offers user notification at all. */
  userNotif: boolean | null;
  /** Feature -> whether this kernel's release has it (inferred from the release number, not probed). */
  seccomp: Record<string, boolean>;
  /** The daemon's version, or null when it does not answer. */
  daemon: string | null;
}

async function versionInfo(socket: string): Promise<VersionInfo> {
  const rel = os.release();
  const [maj = 0, min = 0] = rel.split(/[.-]/).map(Number);
  const seccomp: Record<string, boolean> = {};
  for (const [name, a, b] of SECCOMP_FEATURES) seccomp[name] = maj > a || (maj === a && min >= b);
  let userNotif: boolean | null = null;
  try {
    userNotif = readFileSync('/proc/sys/kernel/seccomp/actions_avail', 'utf8').split(/\s+/).includes('user_notif');
  } catch {
    /* not exposed */
  }
  const daemon = await request<{ version: string }>(socket, 'info', undefined, 1000).then(
    (i) => i.version,
    () => null,
  );
  return { version: VERSION, node: process.version, kernel: rel, arch: os.arch(), userNotif, seccomp, daemon };
}

/** The egress lines of `status` (docs/egress.md): mode and policy, and on an egress gateway its proxy's counts. */
function egressRows(s: StatusResult): Array<[string, string]> {
  const e = s.egress;
  if (!e) return [];
  const rows: Array<[string, string]> = [
    [
      'egress',
      `${e.mode}${e.gateway ? ', egress gateway' : ''}; ${e.rules ? `${e.rules} rule(s)` : 'no rules (all allowed)'}; denied ${e.denied}` +
        (e.mode === 'via-gateway' && !e.gateway ? `; via gateway ${e.viaGateway}, no gateway ${e.noGateway}, live gateways ${e.liveGateways}` : ''),
    ],
  ];
  if (e.proxy) rows.push(['egress proxy', `forwarded ${e.proxy.forwarded}, refused ${e.proxy.refused}, open ${e.proxy.active}`]);
  return rows;
}

/** Asks for status, retrying until the daemon answers or `waitSeconds` pass (0: one try). */
async function statusWithin(socket: string, waitSeconds: number): Promise<StatusResult> {
  const end = Date.now() + waitSeconds * 1000;
  for (;;) {
    try {
      return await request<StatusResult>(socket, 'status', undefined, 2000);
    } catch (e) {
      if (Date.now() >= end || (e instanceof AppswitchError && (e.code === 'ERR_DAEMON_REQUEST' || e.code === 'ERR_PERMISSION'))) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function statesText(states: Record<string, number>): string {
  const order = ['alive', 'suspect', 'dead', 'left', 'conflict'];
  const keys = [...order.filter((k) => k in states), ...Object.keys(states).filter((k) => !order.includes(k))];
  return keys.map((k) => `${states[k]} ${k}`).join(', ') || '-';
}

/** Adds get, status and version to the program. */
export function addOpsCommands(program: Command): void {
  const get = program.command('get').description('show apps, services, members or connections (--json for scripts)');

  withSocket(get.command('apps').description('programs running under appswitch on this node')).action(async (o: CommonOpts) => {
    const apps = await request<AppView[]>(resolveSocket(o.socket), 'apps').catch(fail);
    printRows(!!o.json, apps, JSON_KEYS.apps, () =>
      table(
        ['ID', 'PID', 'IP', 'NAME', 'TAGS', 'SERVICES', 'COMMAND'],
        apps.map((a) => [a.id, String(a.pid ?? '-'), a.ip ?? a.identity, a.name ?? '-', tagsText(a.tags), a.services.join(',') || '-', a.cmd.join(' ')]),
        { width: width(), elastic: [6, 4, 5] },
      ),
    );
  });

  withSocket(get.command('services').description('the service table (cluster-wide)')).action(async (o: CommonOpts) => {
    const svcs = await request<ServiceView[]>(resolveSocket(o.socket), 'services').catch(fail);
    printRows(!!o.json, svcs, JSON_KEYS.services, () =>
      table(
        ['VIP', 'PORT', 'PROTO', 'NAME', 'ENDPOINT', 'NODE', 'APP', 'TAGS'],
        svcs.map((s) => [s.vip, String(s.port), s.proto, s.name ?? '-', s.endpoint, s.node, s.app, tagsText(s.tags)]),
        { width: width(), elastic: [7, 3, 5] },
      ),
    );
  });

  withSocket(get.command('members').description('cluster members as this node sees them')).action(async (o: CommonOpts) => {
    const ms = await request<MemberView[]>(resolveSocket(o.socket), 'members').catch(fail);
    printRows(!!o.json, ms, JSON_KEYS.members, () =>
      table(
        ['NAME', 'ADDRESS', 'STATE', 'INCARNATION'],
        ms.map((m) => [m.name, m.address, m.state === 'conflict' ? 'CONFLICT' : m.state, m.incarnation === null ? '-' : String(m.incarnation)]),
        { width: width(), elastic: [0] },
      ),
    );
  });

  withSocket(get.command('connections').description('open connections this node set up (client -> service -> real endpoint)')).action(
    async (o: CommonOpts) => {
      const cs = await request<ConnectionView[]>(resolveSocket(o.socket), 'connections').catch(fail);
      printRows(!!o.json, cs, JSON_KEYS.connections, () =>
        table(
          ['DIR', 'PATH', 'CLIENT', 'SERVICE', 'ENDPOINT', 'SERVER', 'AGE'],
          cs.map((c) => [c.direction, c.path, c.client, c.service ?? '-', c.endpoint, c.serverApp ?? '-', age(c.ageSeconds)]),
          { width: width(), elastic: [2, 4, 3] },
        ),
      );
    },
  );

  withSocket(program.command('status').description("the daemon's state: node, members, apps, services, trap rate"))
    .option('--wait <seconds>', 'retry until the daemon answers, for at most this long (readiness checks)', '0')
    .action(async (o: CommonOpts & { wait: string }) => {
      const wait = Number(o.wait);
      if (!Number.isFinite(wait) || wait < 0) fail(new AppswitchError('ERR_BAD_ARGUMENT', '--wait must be a number of seconds'));
      const s = await statusWithin(resolveSocket(o.socket), wait).catch(fail);
      if (o.json) {
        print(JSON.stringify(fixedKeys(s, JSON_KEYS.status), null, 2));
        return;
      }
      const open = s.openConnections ?? { tcp: 0, fastpath: 0 };
      const conflicts = (s.nameConflicts ?? []).map((c): [string, string] => [
        'NAME CONFLICT',
        `${c.address} also runs as node ${s.node} (since ${c.since}): neither node sees the other; give each a unique --node-name`,
      ]);
      print(
        table(
          ['FIELD', 'VALUE'],
          [
            ['daemon', `up ${s.uptimeSeconds}s, version ${s.version}`],
            ['node', `${s.node} (${s.nodeAddress})`],
            ...(s.private ? [['private', `the private daemon of uid ${s.owner} (docs/private-daemon.md)`] as [string, string]] : []),
            ...conflicts,
            ['members', s.memberStates ? statesText(s.memberStates) : `${s.members} alive`],
            ['apps', String(s.apps)],
            ['services', String(s.services)],
            ['traps', `${s.trapsPerSecond ?? 0}/s (last 10 s), ${s.traps ?? 0} since start`],
            ['refused connects', `${s.refused} (policy: ${s.denied})`],
            ['refused (daemon ports)', String(s.daemonPortRefused ?? 0)],
            ...(s.ingress
              ? [
                  [
                    'ingress',
                    `${s.ingress.gateway ? 'gateway' : 'not a gateway'}; ${s.ingress.exposures} exposures${s.ingress.conflicts ? ` (${s.ingress.conflicts} in conflict)` : ''}; accepted ${s.ingress.accepted}, forwarded ${s.ingress.forwarded}, refused ${s.ingress.refused}, active ${s.ingress.active}`,
                  ] as [string, string],
                  ['refused (external)', String(s.externalRefused ?? 0)] as [string, string],
                ]
              : []),
            ...egressRows(s),
            ['internal errors', internalErrorsText(s.internalErrors)],
            ['app limits reached', s.limitsReached ? `services ${s.limitsReached.services}, offers ${s.limitsReached.offers}, pending ${s.limitsReached.pending}` : '0'],
            ['open connections', `${open.tcp} TCP, ${open.fastpath} fast path (fast path ${s.fastpath ? 'on' : 'off'})`],
            ['socket group', s.group ?? (s.private ? `none (uid ${s.owner} and root only)` : 'none (root only)')],
            ...steeringRows(s.steering),
          ],
          { width: width(), elastic: [1] },
        ),
      );
    });

  program
    .command('version')
    .description('versions of appswitch, Node.js and the kernel; seccomp features; the daemon')
    .option('--json', 'machine-readable output')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action(async (o: CommonOpts) => {
      const v = await versionInfo(resolveSocket(o.socket));
      if (o.json) {
        print(JSON.stringify(v, null, 2));
        return;
      }
      const feats = SECCOMP_FEATURES.map(([k, a, b]) => `          ${k.padEnd(22)} ${v.seccomp[k] ? 'yes' : 'no '} (Linux ${a}.${b}+)`);
      print(
        [
          `appswitch ${v.version}`,
          `node      ${v.node}`,
          `kernel    ${v.kernel} (${v.arch})`,
          `seccomp   user notification: ${v.userNotif === null ? 'unknown' : v.userNotif ? 'yes' : 'NO'} (actions_avail)`,
          `          by kernel release:`,
          ...feats,
          `daemon    ${v.daemon ?? 'not reachable'}`,
        ].join('\n'),
      );
    });
}

/** "0", or the modules that caught unexpected exceptions: "dns 2, trap 1". */
/** The sk_lookup steering line of `status` (none until a host port was steered or steering failed). */
function steeringRows(st: StatusResult['steering']): Array<[string, string]> {
  if (!st || st.available === null) return [];
  if (!st.available) return [['steering (sk_lookup)', `unavailable: ${st.reason ?? 'unknown'} (the relay serves)`]];
  const ports = Object.entries(st.ports).map(([p, svc]) => `${p} -> ${svc}`);
  return [['steering (sk_lookup)', `${ports.length > 0 ? ports.join(', ') : 'no port'}; accepted ${st.accepted} (${st.decidedByGenerator ?? 0} by the program's generator), refused ${st.refused}`]];
}

function internalErrorsText(counts: Readonly<Record<string, number>> | undefined): string {
  const hit = Object.entries(counts ?? {}).filter(([, n]) => n > 0);
  return hit.length ? hit.map(([m, n]) => `${m} ${n}`).join(', ') : '0';
}
