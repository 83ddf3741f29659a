/** Daemon configuration: flags, defaults and their validation. */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { readResolvConf } from '../dns/index.js';
import { VIRTUAL_DNS_ADDRESS } from '../table/addresses.js';
import { tryParseAddress } from '../gossip/index.js';
import { AppswitchError } from '../errors.js';
import { isValidName } from '../trap/apps.js';
import { LB_STRATEGIES, type LbStrategy } from '../table/balancer.js';
import { parsePortRange } from '../table/port-pool.js';
import { CONTROL_SOCKET_NAME, DEFAULT_STATE_DIR, TRAP_SOCKET_NAME } from './control-protocol.js';
import { EgressRuleError, parseEgressAllow, parseEgressRules, type SourcedRule } from '../policy/egress.js';
import type { EgressMode } from '../trap/egress-route.js';

/** The relay's most worker threads (native/relay.h RELAY_WORKERS_MAX). */
export const RELAY_WORKERS_MAX = 8;

/** A flag refused only because of another one (`--gateway-address needs --gateway`): the same ERR_CONFIG error,
 * told apart so that a config file, whose keys are checked one at a time for their line (src/cli/daemon-config.ts),
 * is not refused for a key whose partner comes further down; the whole set is checked after. */
export class FlagDependencyError extends AppswitchError {
  constructor(message: string) {
    super('ERR_CONFIG', message);
  }
}

export interface DaemonConfig {
  nodeName: string;
  /** Names an older version gave this node by default (the hostname), under which its saved state may be: empty when
   * --node-name is given. */
  formerNodeNames: string[];
  nodeAddress: string;
  ports: { low: number; high: number };
  vipCidrs: string[];
  stateDir: string;
  logLevel: string;
  controlSocket: string;
  trapSocket: string;
  /** How often to look for closed listening sockets (ms). */
  sweepIntervalMs: number;
  gossipPort: number;
  joins: string[];
  /** The cluster key file (--gossip-key); absent: STATE-DIR/gossip.key (see gossip-key.ts). */
  gossipKeyFile?: string;
  /** Gossip and the peer API without authentication (--gossip-plaintext): only when asked for, with a warning. */
  gossipPlaintext: boolean;
  gossipProfile: 'lan' | 'wan' | 'local';
  lb: LbStrategy;
  peerPort: number;
  dnsDomain: string;
  dnsPort: number;
  /** Upstream servers for names appswitch does not own; default: the host's resolv.conf. */
  dnsServers: string[];
  resolvConf: string;
  /** Same-host connections become Unix socket pairs (see native/fastpath.h). */
  fastpath: boolean;
  /** A gateway steers an exposure's host port to the service's instances on the gateway itself, when it has any (BPF
   * sk_lookup, no proxy: docs/ingress-local.md); false only with `--no-ingress-steering` (the relay serves all). */
  ingressSteering: boolean;
  /** Programs run behind the socket guard (native/sockguard.h); false only with `--insecure-no-sockguard`. */
  sockguard: boolean;
  /** Start empty: forget the apps a previous daemon saved (`--clean`). */
  clean: boolean;
  /** How long restored apps wait for their generator to reconnect before they are dropped (ms). */
  restoreGraceMs: number;
  /** Where the Prometheus endpoint (/metrics) listens; absent: no endpoint. */
  metricsAddress?: { host: string; port: number };
  /** (client_app, service) label pairs the per-edge metrics may have; the rest count under "other"
   * (`--metrics-max-series`, default 200; see docs/events.md). */
  metricsMaxSeries?: number;
  /** Where the live view (src/ui) listens; absent: no live view (`--ui-address`). A non-loopback address needs
   * `--ui-allow-remote` (uiAllowRemote): the view serves, without authentication, what `appswitch get` shows. */
  uiAddress?: { host: string; port: number };
  uiAllowRemote?: boolean;
  /** Group whose members may use the control and trap sockets besides root (`--group`, default appswitch). */
  group: string;
  /** Bound sockets (so services) one app may hold (`--max-services-per-app`). */
  maxServicesPerApp: number;
  /** Connections one app may have set up and not yet accepted, and fast-path offers per app (`--max-pending-per-app`). */
  maxPendingPerApp: number;
  /** This node listens for exposures (`--gateway`), on `gatewayAddress` (`--gateway-address`, default 0.0.0.0). */
  gateway: boolean;
  gatewayAddress: string;
  /** A gateway relay's worker threads (`--relay-workers`, 1-8); undefined: the relay's default, one per two CPUs
   * (docs/relay.md, "Threads"). */
  relayWorkers: number | undefined;
  /** This node reaches the outside and carries other nodes' egress (`--egress-gateway`; see docs/egress.md). */
  egressGateway: boolean;
  /** Where an egress gateway's egress proxy listens on the node address (`--egress-port`, default 7949). */
  egressPort: number;
  /** How apps of this node reach outside addresses (`--egress direct|via-gateway`, default direct). */
  egressMode: EgressMode;
  /** Egress policy rules (`--egress-allow`, `--egress-rules FILE`); empty: every app may reach every address. */
  egressRules: SourcedRule[];
  /** An ordinary user's own daemon (`--private`, src/daemon/private-mode.ts): only its user (and root) may use its
   * sockets, programs run in a user namespace of the launcher's, no socket guard, no cluster. */
  private: boolean;
  /** Where the HTTP API listens over TCP (`--api-address`, token-authenticated; docs/api.md); absent: no listener. */
  apiAddress?: { host: string; port: number };
  /** The TCP API's bearer token file (`--api-token-file`); absent: STATE-DIR/api.token, generated when missing. */
  apiTokenFile?: string;
}

export interface DaemonFlags {
  nodeAddress?: string;
  nodeName?: string;
  ports?: string;
  vipCidr?: string[];
  stateDir?: string;
  logLevel?: string;
  gossipPort?: string | number;
  join?: string[];
  gossipKey?: string;
  gossipPlaintext?: boolean;
  gossipProfile?: string;
  lb?: string;
  sweepInterval?: string | number;
  peerPort?: string | number;
  dnsDomain?: string;
  dnsPort?: string | number;
  dnsServers?: string[];
  fastpath?: boolean;
  ingressSteering?: boolean;
  insecureNoSockguard?: boolean;
  clean?: boolean;
  metricsAddress?: string;
  metricsMaxSeries?: string | number;
  uiAddress?: string;
  uiAllowRemote?: boolean;
  group?: string;
  maxServicesPerApp?: string | number;
  maxPendingPerApp?: string | number;
  gateway?: boolean;
  gatewayAddress?: string;
  relayWorkers?: string | number;
  egressGateway?: boolean;
  egressPort?: string | number;
  egress?: string;
  egressAllow?: string[];
  egressRules?: string;
  /** `--private` (the other private defaults are filled in by private-mode.ts privateFlags). */
  private?: boolean;
  apiAddress?: string;
  apiTokenFile?: string;
}

export const DEFAULT_VIP_CIDRS = ['10.0.0.0/8'];

/** The host's own resolvers, from /etc/resolv.conf. */
function hostResolvers(): string[] {
  try {
    return readResolvConf(readFileSync('/etc/resolv.conf', 'utf8'));
  } catch {
    return [];
  }
}
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** The first non-loopback IPv4 address of this host, else 127.0.0.1. */
export function defaultNodeAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/** The default node name: the hostname and the node address (`web1-192.0.2.10`). The hostname alone is not unique:
 * cloned VMs and containers share one, and so do network-namespace hosts on one machine; two nodes with one name
 * never see each other (SWIM keys members by name; see src/gossip/conflicts.ts). The node address is unique among
 * the nodes of a cluster, since they gossip on it. */
export function defaultNodeName(hostname: string, nodeAddress: string): string {
  return `${hostname}-${nodeAddress}`;
}

export function resolveConfig(f: DaemonFlags): DaemonConfig {
  const nodeAddress = f.nodeAddress ?? defaultNodeAddress();
  if (!ipaddr.isValid(nodeAddress)) throw new AppswitchError('ERR_CONFIG', `--node-address ${nodeAddress} is not an IP address`);
  const vipCidrs = f.vipCidr && f.vipCidr.length ? f.vipCidr : DEFAULT_VIP_CIDRS;
  for (const c of vipCidrs) {
    let range;
    try {
      range = ipaddr.parseCIDR(c);
    } catch {
      throw new AppswitchError('ERR_CONFIG', `--vip-cidr ${c} is not a CIDR`);
    }
    const dns = ipaddr.parse(VIRTUAL_DNS_ADDRESS);
    if (range[0].kind() === dns.kind() && dns.match(range)) {
      throw new AppswitchError('ERR_CONFIG', `--vip-cidr ${c} holds ${VIRTUAL_DNS_ADDRESS}, the virtual DNS address programs resolve names through`);
    }
  }
  let ports;
  try {
    ports = parsePortRange(f.ports ?? '40000-60000');
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `--ports: ${(e as Error).message}`);
  }
  const logLevel = f.logLevel ?? 'info';
  if (!LEVELS.includes(logLevel)) throw new AppswitchError('ERR_CONFIG', `--log-level must be one of ${LEVELS.join(', ')}`);
  const stateDir = path.resolve(f.stateDir ?? DEFAULT_STATE_DIR);
  const gossipPort = Number(f.gossipPort ?? 7946);
  if (!Number.isInteger(gossipPort) || gossipPort < 1 || gossipPort > 65535) {
    throw new AppswitchError('ERR_CONFIG', `--gossip-port ${String(f.gossipPort)} is not a port`);
  }
  const gossipProfile = f.gossipProfile ?? 'lan';
  if (gossipProfile !== 'lan' && gossipProfile !== 'wan' && gossipProfile !== 'local') {
    throw new AppswitchError('ERR_CONFIG', `--gossip-profile must be lan, wan or local`);
  }
  const sweep = Number(f.sweepInterval ?? 500);
  if (!Number.isInteger(sweep) || sweep < 10) throw new AppswitchError('ERR_CONFIG', `--sweep-interval must be an integer >= 10 (ms)`);
  const lb = (f.lb ?? 'p2c') as LbStrategy;
  if (!LB_STRATEGIES.includes(lb)) throw new AppswitchError('ERR_CONFIG', `--lb must be one of ${LB_STRATEGIES.join(', ')}`);
  if (f.nodeName !== undefined && f.nodeName.startsWith('@')) {
    throw new AppswitchError('ERR_CONFIG', `--node-name ${f.nodeName}: a node name cannot start with '@' (names such as @vservice are reserved)`);
  }
  const cfg: DaemonConfig = {
    nodeName: f.nodeName ?? defaultNodeName(os.hostname(), ipaddr.process(nodeAddress).toString()),
    formerNodeNames: f.nodeName === undefined ? [os.hostname()] : [],
    nodeAddress: ipaddr.process(nodeAddress).toString(),
    ports,
    vipCidrs,
    stateDir,
    logLevel,
    controlSocket: path.join(stateDir, CONTROL_SOCKET_NAME),
    trapSocket: path.join(stateDir, TRAP_SOCKET_NAME),
    sweepIntervalMs: Number(f.sweepInterval ?? 500),
    gossipPort,
    joins: f.join ?? [],
    gossipPlaintext: f.gossipPlaintext ?? false,
    gossipProfile,
    lb,
    fastpath: f.fastpath ?? true,
    ingressSteering: f.ingressSteering ?? true,
    sockguard: !(f.insecureNoSockguard ?? false),
    clean: f.clean ?? false,
    restoreGraceMs: 5000,
    group: f.group ?? 'appswitch',
    maxServicesPerApp: Number(f.maxServicesPerApp ?? 256),
    maxPendingPerApp: Number(f.maxPendingPerApp ?? 1024),
    peerPort: Number(f.peerPort ?? 7947),
    dnsDomain: (f.dnsDomain ?? 'appswitch.local').toLowerCase().replace(/\.$/, ''),
    dnsPort: Number(f.dnsPort ?? 53),
    dnsServers: f.dnsServers && f.dnsServers.length ? f.dnsServers.flatMap((x) => x.split(',')).filter(Boolean) : hostResolvers(),
    resolvConf: path.join(stateDir, 'resolv.conf'),
    gateway: f.gateway ?? false,
    gatewayAddress: '0.0.0.0',
    relayWorkers: undefined,
    ...resolveEgress(f),
    private: f.private ?? false,
  };
  if (cfg.private && cfg.joins.length) throw new AppswitchError('ERR_CONFIG', '--private: --join is refused: a private daemon gossips on loopback only (no cluster)');
  if (cfg.private && cfg.sockguard) throw new AppswitchError('ERR_CONFIG', '--private: a private daemon has no socket guard (it needs root)');
  if (f.gatewayAddress !== undefined) {
    if (!ipaddr.isValid(f.gatewayAddress)) throw new AppswitchError('ERR_CONFIG', `--gateway-address ${f.gatewayAddress} is not an IP address`);
    if (!cfg.gateway) throw new FlagDependencyError('--gateway-address needs --gateway');
    cfg.gatewayAddress = ipaddr.process(f.gatewayAddress).toString();
  }
  if (f.relayWorkers !== undefined) {
    const n = Number(f.relayWorkers);
    if (!/^\d+$/.test(String(f.relayWorkers).trim()) || n < 1 || n > RELAY_WORKERS_MAX) {
      throw new AppswitchError('ERR_CONFIG', `--relay-workers ${String(f.relayWorkers)} must be an integer from 1 to ${RELAY_WORKERS_MAX}`);
    }
    if (!cfg.gateway) throw new FlagDependencyError('--relay-workers needs --gateway');
    cfg.relayWorkers = n;
  }
  if (!Number.isInteger(cfg.dnsPort) || cfg.dnsPort < 1 || cfg.dnsPort > 65535) {
    throw new AppswitchError('ERR_CONFIG', `--dns-port ${String(f.dnsPort)} is not a port`);
  }
  if (!isValidName(cfg.dnsDomain)) throw new AppswitchError('ERR_CONFIG', `--dns-domain ${cfg.dnsDomain} is not a DNS name`);
  if (!Number.isInteger(cfg.peerPort) || cfg.peerPort < 1 || cfg.peerPort > 65535) {
    throw new AppswitchError('ERR_CONFIG', `--peer-port ${String(f.peerPort)} is not a port`);
  }
  if (!/^[a-z_][a-z0-9_-]{0,31}\$?$/i.test(cfg.group)) throw new AppswitchError('ERR_CONFIG', `--group ${cfg.group} is not a group name`);
  for (const [flag, v] of [
    ['max-services-per-app', cfg.maxServicesPerApp],
    ['max-pending-per-app', cfg.maxPendingPerApp],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 1_000_000) throw new AppswitchError('ERR_CONFIG', `--${flag} must be an integer from 1 to 1000000`);
  }
  if (f.gossipKey !== undefined) cfg.gossipKeyFile = path.resolve(f.gossipKey);
  if (cfg.gossipPlaintext && cfg.gossipKeyFile !== undefined) {
    throw new AppswitchError('ERR_CONFIG', '--gossip-plaintext and --gossip-key exclude each other: plaintext means no key');
  }
  if (f.metricsAddress !== undefined) cfg.metricsAddress = parseMetricsAddress(f.metricsAddress);
  Object.assign(cfg, resolveApiListener(f));
  if (f.metricsMaxSeries !== undefined) {
    const n = Number(f.metricsMaxSeries);
    if (!Number.isInteger(n) || n < 0 || n > 100_000) throw new AppswitchError('ERR_CONFIG', `--metrics-max-series must be an integer from 0 to 100000`);
    cfg.metricsMaxSeries = n;
  }
  if (f.uiAddress !== undefined) cfg.uiAddress = parseUiAddress(f.uiAddress);
  if (f.uiAllowRemote) cfg.uiAllowRemote = true;
  const taken = { '--gossip-port': cfg.gossipPort, '--peer-port': cfg.peerPort, '--dns-port': cfg.dnsPort, '--metrics-address': cfg.metricsAddress?.port };
  for (const [flag, p] of Object.entries(cfg.egressGateway ? taken : {})) {
    if (p === cfg.egressPort) throw new AppswitchError('ERR_CONFIG', `--egress-port ${cfg.egressPort} is also ${flag}`);
  }
  if (cfg.egressGateway && cfg.egressPort >= cfg.ports.low && cfg.egressPort <= cfg.ports.high) {
    throw new AppswitchError('ERR_CONFIG', `--egress-port ${cfg.egressPort} is inside the port pool --ports ${cfg.ports.low}-${cfg.ports.high}`);
  }
  return cfg;
}

/** The egress flags (see docs/egress.md): gateway role, proxy port, mode, and the policy's rules (read from
 * `--egress-rules FILE` here; errors name the flag or file:line). */
function resolveEgress(f: DaemonFlags): Pick<DaemonConfig, 'egressGateway' | 'egressPort' | 'egressMode' | 'egressRules'> {
  const egressPort = Number(f.egressPort ?? 7949);
  if (!Number.isInteger(egressPort) || egressPort < 1 || egressPort > 65535) {
    throw new AppswitchError('ERR_CONFIG', `--egress-port ${String(f.egressPort)} is not a port`);
  }
  const mode = f.egress ?? 'direct';
  if (mode !== 'direct' && mode !== 'via-gateway') throw new AppswitchError('ERR_CONFIG', '--egress must be direct or via-gateway');
  const rules: SourcedRule[] = [];
  try {
    for (const a of f.egressAllow ?? []) rules.push(parseEgressAllow(a));
    if (f.egressRules !== undefined) {
      let text;
      try {
        text = readFileSync(f.egressRules, 'utf8');
      } catch (e) {
        throw new AppswitchError('ERR_CONFIG', `--egress-rules ${f.egressRules}: ${(e as Error).message}`);
      }
      rules.push(...parseEgressRules(text, f.egressRules));
    }
  } catch (e) {
    if (e instanceof EgressRuleError) throw new AppswitchError('ERR_CONFIG', e.message);
    throw e;
  }
  return { egressGateway: f.egressGateway ?? false, egressPort, egressMode: mode, egressRules: rules };
}

/** `--metrics-address ADDR:PORT` ([v6]:PORT for IPv6): an IP address, never a host name. */
export function parseMetricsAddress(s: string): { host: string; port: number } {
  const hp = tryParseAddress(s);
  if (!hp || !ipaddr.isValid(hp.host)) {
    throw new AppswitchError('ERR_CONFIG', `--metrics-address ${s} is not ADDR:PORT (e.g. 127.0.0.1:9464, [::1]:9464)`);
  }
  return { host: ipaddr.process(hp.host).toString(), port: hp.port };
}

/** `--api-address ADDR:PORT` and `--api-token-file FILE` (docs/api.md): a listener on a non-loopback address needs
 * a token file the operator made (a token generated into the state directory, often a tmpfs, would change at every
 * reboot, and remote tools would then be handed a new secret each time: exposing the API off the host must be a
 * deliberate act); a token file without a listener is a mistake. */
export function resolveApiListener(f: Pick<DaemonFlags, 'apiAddress' | 'apiTokenFile'>): Pick<DaemonConfig, 'apiAddress' | 'apiTokenFile'> {
  const out: Pick<DaemonConfig, 'apiAddress' | 'apiTokenFile'> = {};
  if (f.apiTokenFile !== undefined) {
    if (f.apiAddress === undefined) throw new FlagDependencyError('--api-token-file needs --api-address (the token guards the TCP listener)');
    out.apiTokenFile = path.resolve(f.apiTokenFile);
  }
  if (f.apiAddress === undefined) return out;
  const hp = tryParseAddress(f.apiAddress);
  if (!hp || !ipaddr.isValid(hp.host)) {
    throw new AppswitchError('ERR_CONFIG', `--api-address ${f.apiAddress} is not ADDR:PORT (e.g. 127.0.0.1:6463, [::1]:6463)`);
  }
  const host = ipaddr.process(hp.host).toString();
  if (ipaddr.parse(host).range() !== 'loopback' && out.apiTokenFile === undefined) {
    throw new FlagDependencyError(
      `--api-address ${f.apiAddress} is not a loopback address: give the token with --api-token-file FILE (make one: openssl rand -hex 32 > FILE; chmod 600 FILE), see docs/api.md`,
    );
  }
  out.apiAddress = { host, port: hp.port };
  return out;
}

/** `--ui-address ADDR:PORT`: an IP address, never a host name. (Whether a non-loopback one is allowed, with
 * `--ui-allow-remote`, is checked when the view starts: see src/ui/mount.ts.) */
export function parseUiAddress(s: string): { host: string; port: number } {
  const hp = tryParseAddress(s);
  if (!hp || !ipaddr.isValid(hp.host)) throw new AppswitchError('ERR_CONFIG', `--ui-address ${s} is not ADDR:PORT (e.g. 127.0.0.1:6664, [::1]:6664)`);
  return { host: ipaddr.process(hp.host).toString(), port: hp.port };
}
