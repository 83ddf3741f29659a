/** `appswitch daemon --private`: an ordinary user's own daemon, with no root and no system daemon
 * (docs/private-daemon.md). It runs as the user, in the host's namespaces, on 127.0.0.1, with its state under
 * `$XDG_RUNTIME_DIR/appswitch` (else `/tmp/appswitch-UID`), its DNS, gossip and peer ports picked free above 1024,
 * gossip on loopback only (profile local, no joins), a gateway on 127.0.0.1 through the relay (exposed ports reach
 * apps at localhost:HOSTPORT, above 1024), no socket guard (it needs root; the daemon, the generators and
 * the programs are one user anyway), and sockets only the user (and root) may use. The launcher makes a user
 * namespace of its own for each program (native/caller.h as_caller_private_ns). */
import { lstatSync, mkdirSync, readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import { AppswitchError } from '../errors.js';
import type { DaemonFlags } from './config.js';

/** The node address of a private daemon: loopback, which only this host reaches. */
export const PRIVATE_NODE_ADDRESS = '127.0.0.1';

/** Where a private daemon's daemon ports are picked: above 1024, below the kernel's ephemeral range (32768-60999)
 * and outside the default port pool (40000-60000), so neither a client socket nor an app's server takes one later. */
export const PRIVATE_PORT_RANGE = { low: 20000, high: 29999 };

/** The private state directory: `$XDG_RUNTIME_DIR/appswitch` when XDG_RUNTIME_DIR is an absolute path, else
 * `/tmp/appswitch-UID`. */
export function privateStateDir(env: NodeJS.ProcessEnv = process.env, uid: number = process.getuid?.() ?? 0): string {
  const xdg = env.XDG_RUNTIME_DIR;
  return xdg && path.isAbsolute(xdg) ? path.join(xdg, 'appswitch') : `/tmp/appswitch-${uid}`;
}

/** Creates the private state directory 0700, or checks the one there: a real directory (not a symlink), owned by
 * uid, mode 0700 — anything else could be another user's trap (in /tmp, anyone may create the name first), and is
 * refused with ERR_CONFIG saying what is wrong. */
export function preparePrivateStateDir(dir: string, uid: number = process.getuid?.() ?? 0): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') throw new AppswitchError('ERR_CONFIG', `private state dir ${dir}: cannot create it: ${code ?? (e as Error).message}`);
  }
  const st = lstatSync(dir);
  const wrong = !st.isDirectory()
    ? 'it is not a directory (or is a symbolic link)'
    : st.uid !== uid
      ? `it belongs to uid ${st.uid}, not ${uid}`
      : (st.mode & 0o777) !== 0o700
        ? `its mode is ${(st.mode & 0o777).toString(8).padStart(4, '0')}, not 0700`
        : undefined;
  if (wrong) throw new AppswitchError('ERR_CONFIG', `private state dir ${dir} is refused: ${wrong} (remove it, or set XDG_RUNTIME_DIR)`);
}

/** Whether TCP (and UDP too, when udp) port `port` of `host` is free now: bound and closed again. */
async function portFree(host: string, port: number, udp: boolean): Promise<boolean> {
  const tcp = net.createServer();
  const tcpOk = await new Promise<boolean>((resolve) => {
    tcp.once('error', () => resolve(false));
    tcp.listen({ host, port, exclusive: true }, () => resolve(true));
  });
  let udpOk = true;
  if (tcpOk && udp) {
    const u = dgram.createSocket('udp4');
    udpOk = await new Promise<boolean>((resolve) => {
      u.once('error', () => resolve(false));
      u.bind({ address: host, port, exclusive: true }, () => resolve(true));
    });
    await new Promise<void>((resolve) => {
      try {
        u.close(() => resolve());
      } catch {
        resolve(); /* never bound */
      }
    });
  }
  if (tcpOk) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  return tcpOk && udpOk;
}

/** `count` distinct ports of PRIVATE_PORT_RANGE free on host now (TCP, and UDP when udp[i]), tried at random.
 * Another process may take one before the daemon binds it: the daemon then fails to start and says which. */
export async function pickFreePorts(host: string, udp: boolean[], random: () => number = Math.random): Promise<number[]> {
  const out: number[] = [];
  const span = PRIVATE_PORT_RANGE.high - PRIVATE_PORT_RANGE.low + 1;
  for (const needUdp of udp) {
    let found: number | undefined;
    for (let tries = 0; tries < 200 && found === undefined; tries++) {
      const p = PRIVATE_PORT_RANGE.low + Math.floor(random() * span);
      if (!out.includes(p) && (await portFree(host, p, needUdp))) found = p;
    }
    if (found === undefined) throw new AppswitchError('ERR_CONFIG', `--private: no free port in ${PRIVATE_PORT_RANGE.low}-${PRIVATE_PORT_RANGE.high} on ${host}`);
    out.push(found);
  }
  return out;
}

/** The flags of a private daemon: what the user gave (`given(attr)`: from the command line or a config file), and
 * for the rest the private defaults; refuses what private mode cannot do (joins, a port below 1024). */
export async function privateFlags(f: DaemonFlags, given: (attr: keyof DaemonFlags) => boolean): Promise<DaemonFlags> {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) {
    throw new AppswitchError('ERR_CONFIG', '--private is for an ordinary user with no system daemon; root runs the system daemon (`appswitch daemon`)');
  }
  if (f.join?.length) throw new AppswitchError('ERR_CONFIG', '--private: --join is refused: a private daemon gossips on loopback only (no cluster)');
  const out: DaemonFlags = { ...f, private: true };
  if (!given('stateDir')) out.stateDir = privateStateDir(process.env, uid);
  if (!given('nodeAddress')) out.nodeAddress = PRIVATE_NODE_ADDRESS;
  if (!given('gossipProfile')) out.gossipProfile = 'local';
  out.insecureNoSockguard = true; /* the guard's cgroup BPF programs need root */
  /* a gateway on loopback: `run --expose HOSTPORT:PORT` (appswitch.yaml `ports:`) reaches the app at
   * localhost:HOSTPORT through the C relay; steering (BPF sk_lookup) needs CAP_BPF and CAP_NET_ADMIN */
  if (!given('gateway')) out.gateway = true;
  if (!given('gatewayAddress') && out.gateway) out.gatewayAddress = out.nodeAddress ?? PRIVATE_NODE_ADDRESS;
  if (!given('ingressSteering')) out.ingressSteering = false;
  const want: Array<['gossipPort' | 'peerPort' | 'dnsPort', boolean]> = [
    ['gossipPort', true],
    ['peerPort', false],
    ['dnsPort', true],
  ];
  const missing = want.filter(([k]) => !given(k));
  const ports = await pickFreePorts(out.nodeAddress ?? PRIVATE_NODE_ADDRESS, missing.map(([, udp]) => udp));
  missing.forEach(([k], i) => (out[k] = ports[i]));
  for (const [k] of want) {
    const p = Number(out[k]);
    if (Number.isInteger(p) && p > 0 && p < 1024) {
      throw new AppswitchError('ERR_CONFIG', `--private: --${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${p} is below 1024, which an ordinary user cannot bind`);
    }
  }
  return out;
}

/** The lowest port an ordinary user may bind (net.ipv4.ip_unprivileged_port_start; 1024 when it cannot be read). */
export function unprivilegedPortStart(): number {
  try {
    const n = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim());
    return Number.isInteger(n) && n >= 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

/** What a private daemon's trap handler gets on top of the usual: its user may `--expose` (AppRegistryDeps.adminUid);
 * host ports below the unprivileged start are refused by the gateway (IngressDeps.minHostPort). */
export function privateHandlerDeps(uid: number = process.getuid?.() ?? 0): { adminUid: number } {
  return { adminUid: uid };
}
