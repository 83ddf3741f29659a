/** Compares the per-case results of test/helpers/fuzz.c run natively and under appswitch with the same seed.
 * A case must give the same result in both runs unless a rule below explains the difference. Rules are either
 * `design` (appswitch means something else on purpose: README, "What happens to a program's system calls") or
 * `known` (a divergence that is understood and not fixed yet; each names what it would take). */

export interface Case {
  index: number;
  syscall: string;
  fd: string;
  /** v virtual, l loopback/any, o other, u AF_UNSPEC, x no valid inet address, n none, - n/a */
  dest: string;
  /** socket(): i/r/u/p/f; sends: F with MSG_FASTOPEN */
  info: string;
  result: string;
}

export interface Rule {
  kind: 'design' | 'known';
  reason: string;
  applies: (native: Case, appswitch: Case) => boolean;
}

const SENDS = new Set(['sendto', 'sendmsg', 'sendmmsg']);
const UDP = new Set(['udp4', 'udp6']);
const FAST = new Set(['conn', 'conn_srv']);
const isErr = (r: string): boolean => r.startsWith('E');
const isOk = (r: string): boolean => r === 'OK' || r.startsWith('=');

export const RULES: Rule[] = [
  {
    kind: 'design',
    reason: 'socket(): the filter refuses raw/packet/other inet types (EPERM) and unknown families (EAFNOSUPPORT) before the kernel looks at the rest',
    applies: (n, a) => n.syscall === 'socket' && 'rpf'.includes(n.info) && (a.result === 'EPERM' || a.result === 'EAFNOSUPPORT'),
  },
  {
    kind: 'design',
    reason: 'socket(): inet sockets are TCP or UDP only (EPROTONOSUPPORT for ICMP, SCTP, ...): the socket guard\'s kernel hooks see every address those two pick, not the others\' (native/gen_names.c as_h_socket)',
    applies: (n, a) => n.syscall === 'socket' && n.info === 'i' && a.result === 'EPROTONOSUPPORT',
  },
  {
    kind: 'design',
    reason: 'MSG_FASTOPEN is an implicit connect: the filter refuses it (EOPNOTSUPP) before anything else is checked',
    applies: (n, a) => n.info === 'F' && a.result === 'EOPNOTSUPP',
  },
  {
    kind: 'design',
    reason: 'a virtual address is a name: connect/send reach its service or get ECONNREFUSED, bind on it works; natively it is a route',
    applies: (n) => n.dest === 'v' && ['connect', 'bind', ...SENDS].includes(n.syscall),
  },
  {
    kind: 'design',
    reason: "the node address's daemon ports (gossip, peer API, another node's DNS) and port pool are closed doors to programs: connect ECONNREFUSED, send EPERM",
    applies: (n, a) => n.dest === 'd' && ['connect', ...SENDS].includes(n.syscall) && (a.result === 'ECONNREFUSED' || a.result === 'EPERM'),
  },
  {
    kind: 'design',
    reason: "127.0.0.1/any is the app's own port space: connect/send reach its own service or get ECONNREFUSED; bind takes a virtual port",
    applies: (n) => (n.dest === 'l' && ['connect', 'bind', ...SENDS].includes(n.syscall)) || (n.dest === 'u' && n.syscall === 'bind'),
  },
  {
    kind: 'design',
    reason: 'bind of a real (non-virtual) address: the daemon binds servers to the node address, other local addresses are not offered',
    applies: (n, a) => n.syscall === 'bind' && 'od'.includes(n.dest) && (a.result === 'EADDRNOTAVAIL' || a.result === 'EADDRINUSE'),
  },
  {
    kind: 'design',
    reason: 'sendmmsg sends one message per trap (the caller retries the rest, as the API allows)',
    applies: (n, a) => n.syscall === 'sendmmsg' && /^=[1-9]/.test(n.result) && a.result === '=1',
  },
  {
    kind: 'known',
    reason: 'fast path: the program holds a Unix socket, so a stream send with an address, bind, and some TCP-level options are answered by the Unix socket (EISCONN/EINVAL/EOPNOTSUPP...) where TCP would ignore or refuse differently; needs the generator to answer these itself',
    applies: (n) => FAST.has(n.fd) && [...SENDS, 'bind', 'setsockopt', 'getsockopt', 'connect'].includes(n.syscall),
  },
  {
    kind: 'known',
    reason: 'UDP send with several bad arguments: the generator checks payload, then destination; the kernel checks destination length, family, then payload (both refuse)',
    applies: (n, a) => SENDS.has(n.syscall) && UDP.has(n.fd) && isErr(n.result) && isErr(a.result) && 'xond'.includes(n.dest),
  },
  {
    kind: 'known',
    reason: 'UDP6 socket with an AF_INET or v4-mapped destination: the kernel sends/connects dual-stack (ip6_datagram_connect, udpv6_sendmsg); the generator requires the socket family and sends mapped addresses from the host socket',
    applies: (n, a) => [...SENDS, 'connect'].includes(n.syscall) && n.fd === 'udp6' && 'od'.includes(n.dest) && (isErr(n.result) || isErr(a.result)),
  },
  {
    kind: 'known',
    reason: "IPv6 destination with a scope id (fe80::1%N): the daemon's endpoint encoding drops sin6_scope_id, so the real connect gets EINVAL",
    applies: (n, a) => ['tcp6', 'udp6'].includes(n.fd) && 'od'.includes(n.dest) && n.syscall === 'connect' && a.result === 'EINVAL',
  },
  {
    kind: 'known',
    reason: 'UDP send to an AF_UNSPEC address: udp_sendmsg takes it as AF_INET, udpv6 as no address; the generator refuses it (EAFNOSUPPORT/EINVAL)',
    applies: (n, a) => SENDS.has(n.syscall) && UDP.has(n.fd) && n.dest === 'u' && isErr(a.result),
  },
  {
    kind: 'known',
    reason: 'NOT UNDERSTOOD YET: UDP4 sendmsg/sendmmsg to a real address that the kernel refuses with EINVAL is sent by the generator (seed 42: cases 15534, 25765, 92104, 114879); suspects: random flag bits or control data',
    applies: (n, a) => ['sendmsg', 'sendmmsg'].includes(n.syscall) && n.fd === 'udp4' && 'od'.includes(n.dest) && n.result === 'EINVAL' && isOk(a.result),
  },
  {
    kind: 'known',
    reason: 'bind on a socket that is already bound (a listener): the generator says EINVAL before the address is judged; the kernel checks the address first',
    applies: (n, a) => n.syscall === 'bind' && ['listen', 'pending'].includes(n.fd) && a.result === 'EINVAL',
  },
];

export function parseCases(out: string): Map<number, Case> {
  const m = new Map<number, Case>();
  for (const line of out.split('\n')) {
    const f = line.split(' ');
    if (f[0] !== 'C' || f.length !== 7) continue;
    const c: Case = { index: Number(f[1]), syscall: f[2] as string, fd: f[3] as string, dest: f[4] as string, info: f[5] as string, result: f[6] as string };
    m.set(c.index, c);
  }
  return m;
}

export interface Comparison {
  cases: number;
  perSyscall: Record<string, number>;
  same: number;
  /** rule reason -> how many cases it explained */
  explained: Map<string, number>;
  mismatches: Array<{ native: Case; appswitch: Case | undefined }>;
}

export function compare(nativeOut: string, appswitchOut: string): Comparison {
  const n = parseCases(nativeOut);
  const a = parseCases(appswitchOut);
  const res: Comparison = { cases: n.size, perSyscall: {}, same: 0, explained: new Map(), mismatches: [] };
  for (const [i, nc] of n) {
    res.perSyscall[nc.syscall] = (res.perSyscall[nc.syscall] ?? 0) + 1;
    const ac = a.get(i);
    if (ac && ac.result === nc.result) {
      res.same++;
      continue;
    }
    // a non-blocking connect that completes at once may say 0 or EINPROGRESS (connect(2)); both mean "connecting"
    if (ac && nc.syscall === 'connect' && ['OK', 'EINPROGRESS'].includes(nc.result) && ['OK', 'EINPROGRESS'].includes(ac.result)) {
      res.same++;
      continue;
    }
    const rule = ac ? RULES.find((r) => r.applies(nc, ac)) : undefined;
    if (rule) res.explained.set(`[${rule.kind}] ${rule.reason}`, (res.explained.get(`[${rule.kind}] ${rule.reason}`) ?? 0) + 1);
    else res.mismatches.push({ native: nc, appswitch: ac });
  }
  return res;
}
