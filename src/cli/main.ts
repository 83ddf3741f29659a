/** The appswitch command line: one CLI for every subcommand (daemon, run, get, status, version). */
import { Command, CommanderError, Option } from 'commander';
import { type DaemonFlags, resolveConfig } from '../daemon/config.js';
import type { InfoResult } from '../daemon/control-protocol.js';
import { Daemon } from '../daemon/daemon.js';
import { installProcessGuards } from '../daemon/internal-errors.js';
import { boundPrivateLog } from '../daemon/log-rotate.js';
import { VERSION } from '../daemon/version.js';
import { AppswitchError } from '../errors.js';
import { launcherPath, native } from '../native/binding.js';
import { parseTags } from '../trap/apps.js';
import { projectLabelProblem } from '../daemon/project-resolv.js';
import { decodeExposeList, parseExpose } from '../gateway/exposures.js';
import { request, resolveSocket } from './client.js';
import { annotate, applyConfigFile } from './daemon-config.js';
import { addComposeCommands } from './compose.js';
import { addKeygenCommand } from './keygen.js';
import { runnableLauncher } from './launcher.js';
import { privateFlags } from '../daemon/private-mode.js';
import { addOpsCommands } from './ops.js';
import { addEventsCommand } from './events.js';
import { addIngressCommands } from './ingress.js';
import { addVserviceCommands } from './vservice.js';
import { configureUsage, EXIT_APPSWITCH, usageExitCode } from './usage.js';

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function fail(e: unknown): never {
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`appswitch: ${msg}\n`);
  process.exit(EXIT_APPSWITCH);
}

async function runDaemon(cmd: Command): Promise<void> {
  const { opts, file, values } = applyConfigFile(cmd);
  let flags: DaemonFlags = {
    nodeAddress: opts.nodeAddress as string | undefined,
    nodeName: opts.nodeName as string | undefined,
    ports: opts.ports as string | undefined,
    vipCidr: opts.vipCidr as string[] | undefined,
    gossipPort: opts.gossipPort as string | undefined,
    join: opts.join as string[] | undefined,
    gossipKey: opts.gossipKey as string | undefined,
    gossipPlaintext: opts.gossipPlaintext as boolean | undefined,
    gossipProfile: opts.gossipProfile as string | undefined,
    lb: opts.lb as string | undefined,
    sweepInterval: opts.sweepInterval as string | undefined,
    peerPort: opts.peerPort as string | undefined,
    dnsDomain: opts.dnsDomain as string | undefined,
    dnsPort: opts.dnsPort as string | undefined,
    dnsServers: opts.dnsServers as string[] | undefined,
    stateDir: opts.stateDir as string | undefined,
    logLevel: opts.logLevel as string | undefined,
    fastpath: opts.fastpath as boolean | undefined,
    ingressSteering: opts.ingressSteering as boolean | undefined,
    insecureNoSockguard: opts.insecureNoSockguard as boolean | undefined,
    clean: opts.clean as boolean | undefined,
    metricsAddress: opts.metricsAddress as string | undefined,
    metricsMaxSeries: opts.metricsMaxSeries as string | undefined,
    uiAddress: opts.uiAddress as string | undefined,
    uiAllowRemote: opts.uiAllowRemote as boolean | undefined,
    group: opts.group as string | undefined,
    maxServicesPerApp: opts.maxServicesPerApp as string | undefined,
    maxPendingPerApp: opts.maxPendingPerApp as string | undefined,
    gateway: opts.gateway as boolean | undefined,
    gatewayAddress: opts.gatewayAddress as string | undefined,
    relayWorkers: opts.relayWorkers as string | undefined,
    egressGateway: opts.egressGateway as boolean | undefined,
    egressPort: opts.egressPort as string | undefined,
    egress: opts.egress as string | undefined,
    egressAllow: opts.egressAllow as string[] | undefined,
    egressRules: opts.egressRules as string | undefined,
    apiAddress: opts.apiAddress as string | undefined,
    apiTokenFile: opts.apiTokenFile as string | undefined,
  };
  let cfg;
  try {
    if (opts.private === true) flags = await privateFlags(flags, (attr) => !['default', undefined].includes(cmd.getOptionValueSource(attr)));
    cfg = resolveConfig(flags);
  } catch (e) {
    throw annotate(e, file, values);
  }
  const d = new Daemon(cfg);
  installProcessGuards(process, d.internalErrors); /* what escapes every handler is logged and counted, see internal-errors.ts */
  await d.start();
  if (!cfg.sockguard && !cfg.private) d.log.warn('running without the socket guard (--insecure-no-sockguard): programs can bypass appswitch with a dup2() race');
  if (cfg.private) boundPrivateLog(d.log);
  let stopping = false;
  const stop = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    void d.stop({ reason: 'signal', signal: sig }).then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

interface RunOptions {
  ip?: string;
  name?: string;
  tag: string[];
  lb?: string;
  dnsOverride: string;
  socket?: string;
  fastpath: boolean;
  daemonWait: string;
  user?: string;
  capAdd: string[];
  capDrop: string[];
  expose: string[];
  project?: string;
}

/** `--project P`: the app's name becomes NAME.P, it is tagged project=P (apps of one project may talk to each
 * other, and not to other projects' unless they share another tag), and its resolv.conf searches P.DOMAIN first, so
 * a bare name resolves inside the project. `appswitch up` runs every service this way. */
function applyProject(meta: Record<string, unknown>, tags: Record<string, string>, opts: RunOptions): void {
  const p = opts.project;
  if (p === undefined) return;
  const why = projectLabelProblem(p);
  if (why) throw new AppswitchError('ERR_BAD_ARGUMENT', `--project: ${why}`);
  if (tags.project !== undefined && tags.project !== p) {
    throw new AppswitchError('ERR_BAD_ARGUMENT', `--tag project=${tags.project} contradicts --project ${p}`);
  }
  tags.project = p;
  if (opts.name !== undefined) {
    if (opts.name.includes('.')) throw new AppswitchError('ERR_BAD_ARGUMENT', `--name ${opts.name}: with --project, give the bare name (it becomes NAME.${p})`);
    meta.name = `${opts.name}.${p}`;
  }
}

/** Capabilities no program gets (native/caps.h AS_CAPS_FORBIDDEN; the launcher checks again). */
const FORBIDDEN_CAPS = new Set(['DAC_READ_SEARCH', 'NET_ADMIN', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_PTRACE', 'SYS_ADMIN', 'SYS_BOOT', 'PERFMON', 'BPF']);

/** The launcher's --user/--cap-add/--cap-drop arguments; a forbidden capability is refused here with the reason. */
function credentialArgs(opts: RunOptions): string[] {
  const out: string[] = [];
  if (opts.user !== undefined) out.push('--user', opts.user);
  for (const c of opts.capAdd) {
    const name = c.toUpperCase().replace(/^CAP_/, '');
    if (name === 'ALL' || FORBIDDEN_CAPS.has(name)) {
      throw new AppswitchError('ERR_BAD_ARGUMENT', `--cap-add ${c}: refused; a program under appswitch never gets ${name === 'ALL' ? 'all capabilities' : `CAP_${name}`} (it would reach around the trap; see README, Privilege)`);
    }
    out.push('--cap-add', name);
  }
  for (const c of opts.capDrop) out.push('--cap-drop', c.toUpperCase().replace(/^CAP_/, ''));
  return out;
}

async function runApp(cmd: string[], opts: RunOptions): Promise<void> {
  if (opts.dnsOverride !== 'true' && opts.dnsOverride !== 'false') {
    throw new AppswitchError('ERR_BAD_ARGUMENT', '--dns-override must be true or false');
  }
  if (!/^\d{1,8}$/.test(opts.daemonWait)) throw new AppswitchError('ERR_BAD_ARGUMENT', '--daemon-wait must be a number of milliseconds');
  if (cmd.length === 0) throw new AppswitchError('ERR_BAD_ARGUMENT', 'run: no command given (appswitch run [options] -- CMD [ARGS...])');
  const tags = parseTags(opts.tag);
  const meta: Record<string, unknown> = { tags, cmd };
  if (opts.ip !== undefined) meta.ip = opts.ip;
  if (opts.name !== undefined) meta.name = opts.name;
  applyProject(meta, tags, opts);
  if (opts.lb !== undefined) meta.lb = opts.lb;
  if (!opts.fastpath) meta.fastpath = false;
  if (opts.expose.length) {
    try {
      meta.expose = opts.expose.map(parseExpose);
    } catch (e) {
      throw new AppswitchError('ERR_BAD_ARGUMENT', (e as Error).message);
    }
    const why = decodeExposeList(meta.expose);
    if (typeof why === 'string') throw new AppswitchError('ERR_BAD_ARGUMENT', why);
  }
  /* root through sudo: the app belongs to the user who ran sudo (whose vips and names it may share) */
  const sudoUid = process.env.SUDO_UID;
  if (process.getuid?.() === 0 && sudoUid !== undefined && /^\d{1,10}$/.test(sudoUid)) meta.owner = Number(sudoUid);
  const creds = credentialArgs(opts);
  const info = await request<InfoResult>(resolveSocket(opts.socket), 'info', opts.project === undefined ? undefined : { project: opts.project });
  /* an ordinary user: the installed setuid launcher, or what to do; against the user's own private daemon, any
   * launcher of this installation (it makes a user namespace of its own: --private) */
  const own = info.private === true && info.owner === process.getuid?.() && info.owner !== 0;
  const launcher = own ? launcherPath() : runnableLauncher();
  const env = Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`);
  // Replace this Node process with the small C generator: the program's overhead is then ~1 MB, not ~40.
  const resolv = opts.dnsOverride === 'true' ? ['--resolv', info.resolvConf] : [];
  const guard = own ? ['--private'] : info.sockguard === false ? ['--no-sockguard'] : []; /* the daemon's operator opted out for the host */
  native.execve(launcher, [launcher, '--socket', info.trapSocket, '--meta', JSON.stringify(meta), '--daemon-wait', opts.daemonWait, ...resolv, ...creds, ...guard, '--', ...cmd], env);
}

export function buildCli(): Command {
  const program = new Command('appswitch')
    .description('appswitch: give applications their own network identity at the system-call layer')
    .version(VERSION, '-V, --version')
    .showHelpAfterError()
    .enablePositionalOptions();
  configureUsage(program);

  program
    .command('daemon')
    .description('run the per-host daemon in the foreground')
    .option('--config <file>', 'read these flags from a YAML file (keys: the long flag names); flags given here win')
    .option('--node-address <addr>', 'host address that real server sockets bind to (default: first non-loopback address)')
    .option('--node-name <name>', 'name of this node, unique in the cluster (default: HOSTNAME-NODEADDRESS)')
    .option('--ports <range>', 'host port pool for servers under appswitch', '40000-60000')
    .option('--vip-cidr <cidr>', 'virtual IP range (repeatable; default 10.0.0.0/8)', collect, [])
    .option('--state-dir <dir>', 'directory of the control and trap sockets', '/run/appswitch')
    .option('--join <addr[:port]>', 'a member to join (repeatable; retried with backoff until one answers)', collect, [])
    .option('--gossip-port <port>', 'gossip port (UDP and TCP)', '7946')
    .option('--peer-port <port>', 'TCP port where daemons ask each other who a client is (same on every node)', '7947')
    .option('--gossip-key <file>', 'cluster key file (gossip and peer API): one 32-byte key per line (base64 or hex); the first encrypts, all decrypt (default: STATE-DIR/gossip.key, generated on the first start of a node that joins nobody)')
    .option('--gossip-plaintext', 'run gossip and the peer API WITHOUT authentication (anyone who can reach their ports can publish services); logs a warning')
    .addOption(new Option('--gossip-profile <profile>', 'gossip timing profile').choices(['lan', 'wan', 'local']).default('lan'))
    .option('--dns-domain <domain>', 'domain of app names (web and web.<domain> resolve)', 'appswitch.local')
    .option('--dns-port <port>', 'port of the built-in DNS server on the node address', '53')
    .option('--dns-servers <ip[:port]>', 'upstream DNS servers (repeatable or comma-separated; default: /etc/resolv.conf)', collect, [])
    .option('--sweep-interval <ms>', 'how often closed listening sockets are noticed (at most: a costly sweep waits 20 times what it took, up to 10 s)', '500')
    .addOption(new Option('--lb <strategy>', 'default load balancing over service instances').choices(['random', 'round-robin', 'least-conn', 'p2c']).default('p2c'))
    .option('--no-fastpath', 'same-host connections stay loopback TCP instead of a Unix socket pair')
    .option('--no-ingress-steering', 'a gateway relays every external connection, also to instances on itself (default: those get the connection directly, sk_lookup)')
    .option('--insecure-no-sockguard', 'run programs without the socket guard (cgroup v2 + BPF): they can then reach host addresses with a dup2() race; logs a warning')
    .option('--clean', 'start empty: forget the running apps a previous daemon saved in the state directory (virtual services are kept)')
    .option('--metrics-address <addr:port>', 'serve Prometheus metrics at http://ADDR:PORT/metrics (default: off; e.g. 127.0.0.1:9464)')
    .option('--metrics-max-series <n>', 'per-edge metrics: at most this many (client_app, service) label pairs; the rest are counted under client_app=other, service=other', '200')
    .option('--ui-address <addr:port>', 'serve the live view (a web page of the application network) at http://ADDR:PORT/ (default: off; e.g. 127.0.0.1:6664)')
    .option('--ui-allow-remote', 'allow a non-loopback --ui-address (the view has no authentication; see docs/live-view.md)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .option('--group <name>', 'group whose members may use the control and trap sockets (besides root)', 'appswitch')
    .option('--max-services-per-app <n>', 'bound sockets (so services) one app may hold; past it bind() gets ENOBUFS', '256')
    .option('--max-pending-per-app <n>', 'connections one app may have set up and not yet accepted (and fast-path offers per app)', '1024')
    .option('--gateway', 'listen for exposures (appswitch run --expose, appswitch expose): outside clients reach exposed services at this node')
    .option('--gateway-address <ip>', 'address where a gateway listens for exposures (default: 0.0.0.0, every address of the host)')
    .option('--relay-workers <n>', "a gateway relay's worker threads, 1-8 (default: one per two CPUs)")
    .option('--egress-gateway', "this node reaches the outside and carries other nodes' egress (its egress proxy listens on --egress-port)")
    .option('--egress-port <port>', "TCP port of an egress gateway's egress proxy on the node address (a daemon port)", '7949')
    .addOption(new Option('--egress <mode>', 'how apps reach addresses outside the application network').choices(['direct', 'via-gateway']).default('direct'))
    .option('--egress-allow <k=v=cidr>', 'egress policy: apps tagged K=V (or * for every app) may reach CIDR (repeatable; no rule at all: everything allowed)', collect, [])
    .option('--egress-rules <file>', 'egress policy rules file (YAML or JSON list of {tags, cidrs}); adds to --egress-allow')
    .option('--private', "an ordinary user's own daemon, no root needed: state in $XDG_RUNTIME_DIR/appswitch, node address 127.0.0.1, free ports above 1024, no cluster, no socket guard (docs/private-daemon.md)")
    .option('--api-address <addr:port>', 'serve the HTTP control API over TCP too, token-authenticated, with root\'s privilege (default: off; e.g. 127.0.0.1:6463; see docs/api.md)')
    .option('--api-token-file <file>', 'bearer token of --api-address (default: STATE-DIR/api.token, generated on the first start; required for a non-loopback address)')
    .action((_opts: Record<string, unknown>, cmd: Command) => Promise.resolve(cmd).then(runDaemon).catch(fail));

  program
    .command('run')
    .description('run a program under appswitch (appswitch run [options] -- CMD [ARGS...])')
    .option('--ip <addr>', 'virtual IP of the app (inside --vip-cidr)')
    .option('--name <name>', 'name of the app')
    .option('--tag <k=v>', 'tag (repeatable); apps may connect when they share a tag (no tag = zone=default)', collect, [])
    .addOption(new Option('--lb <strategy>', "load balancing for this app's services").choices(['random', 'round-robin', 'least-conn', 'p2c']))
    .option('--no-fastpath', "this app's same-host connections stay TCP (no Unix socket pair)")
    .option('--daemon-wait <ms>', 'how long a trapped call waits for a restarting daemon before it fails with ENETDOWN', '10000')
    .option('--dns-override <bool>', "point the program's /etc/resolv.conf at the daemon's DNS (private mount namespace)", 'true')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .option('--user <name[:group]>', 'run the program as this user (and group), with no capabilities')
    .option('--cap-add <cap>', "give the program this capability too (repeatable; never SYS_ADMIN, NET_ADMIN, SYS_PTRACE, BPF...)", collect, [])
    .option('--cap-drop <cap>', 'take this capability from the program (repeatable; ALL for every one)', collect, [])
    .option('--project <name>', 'run as part of an `appswitch up` project: the name becomes NAME.PROJECT, tag project=PROJECT, bare names resolve inside the project first')
    .option('--expose <[hostport:]port>', 'reach this port of the app from outside, at HOSTPORT (default PORT) of the gateway nodes (repeatable)', collect, [])
    .argument('<cmd...>', 'program and its arguments')
    .passThroughOptions()
    .action((cmd: string[], opts: RunOptions) => runApp(cmd, opts).catch(fail));

  addOpsCommands(program);
  addEventsCommand(program);
  addIngressCommands(program);
  addVserviceCommands(program);
  addKeygenCommand(program);
  addComposeCommands(program, (p) =>
    p.then((code) => process.exit(typeof code === 'number' ? code : 0)).catch(fail),
  );
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(usageExitCode(e));
    throw e;
  }
}
