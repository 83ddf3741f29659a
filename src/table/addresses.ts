/** Virtual address space: the `--vip-cidr` ranges (vips are names, never destinations) and the link-local
 * identities given to apps started without `--ip`. */
import ipaddr from 'ipaddr.js';

/** Apps without --ip get an identity from this range; it is virtual too (never routed). */
export const IDENTITY_CIDR = '169.254.0.0/16';

/** The resolver address programs see in their resolv.conf (src/trap/virtual-dns.ts): inside the identity range, so
 * virtual (a program can never reach a network there), and in 169.254.0.0/24, which RFC 3927 reserves and
 * IdentityPool never hands out, so it is never an app's identity. Port 53 there is the daemon's DNS server, whatever
 * --dns-port it listens on. */
export const VIRTUAL_DNS_ADDRESS = '169.254.0.53';
/** The port programs use at VIRTUAL_DNS_ADDRESS: resolv.conf(5) cannot name another. */
export const VIRTUAL_DNS_PORT = 53;

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseCidr(c: string): Range {
  try {
    return ipaddr.parseCIDR(c);
  } catch {
    throw new RangeError(`not a CIDR: "${c}"`);
  }
}

function norm(ip: string): ipaddr.IPv4 | ipaddr.IPv6 {
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) return (a as ipaddr.IPv6).toIPv4Address();
  return a;
}

export class VirtualRanges {
  private readonly ranges: Range[];

  constructor(readonly cidrs: string[]) {
    this.ranges = [...cidrs, IDENTITY_CIDR].map(parseCidr);
  }

  /** Whether ip is a virtual address (inside --vip-cidr or the identity range). */
  contains(ip: string): boolean {
    const a = norm(ip);
    return this.ranges.some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits));
  }

  /** Whether ip is inside one of the --vip-cidr ranges (the ones --ip may use). */
  isVip(ip: string): boolean {
    const a = norm(ip);
    return this.ranges
      .slice(0, this.cidrs.length)
      .some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits));
  }
}

/** Whether ip is the network or the broadcast address of one of the IPv4 ranges (prefix /30 or shorter: /31 and
 * /32 have neither, RFC 3021) that contain it: 'network', 'broadcast', or undefined. Neither is an app's address
 * (vips assigned by name skip them too, directory.ts): programs treat them as the subnet and as everyone on it. */
export function rangeEdge(cidrs: readonly string[], ip: string): { kind: 'network' | 'broadcast'; cidr: string } | undefined {
  const a = norm(ip);
  if (a.kind() !== 'ipv4') return undefined;
  for (const cidr of cidrs) {
    const [net, bits] = parseCidr(cidr);
    if (net.kind() !== 'ipv4' || bits > 30 || !a.match(net, bits)) continue;
    const s = a.toString();
    if (s === ipaddr.IPv4.networkAddressFromCIDR(cidr).toString()) return { kind: 'network', cidr };
    if (s === ipaddr.IPv4.broadcastAddressFromCIDR(cidr).toString()) return { kind: 'broadcast', cidr };
  }
  return undefined;
}

export function isLoopback(ip: string): boolean {
  const a = norm(ip);
  if (a.kind() === 'ipv4') return a.range() === 'loopback' || a.toString() === '0.0.0.0';
  return a.range() === 'loopback' || a.range() === 'unspecified';
}

export function isUnspecified(ip: string): boolean {
  const a = norm(ip);
  return a.range() === 'unspecified';
}

/** Hands out link-local identities 169.254.1.0 - 169.254.254.255 (skipping .169.254, the metadata address). */
export class IdentityPool {
  private readonly used = new Set<string>();
  private next: number;

  /** `seed` spreads nodes over the range (a hash of the node name); `taken` sees identities of other nodes. */
  constructor(
    seed = 0,
    private readonly taken: (ip: string) => boolean = () => false,
  ) {
    this.next = 256 + (seed % (253 * 256));
  }

  allocate(): string {
    for (let i = 0; i < 254 * 256; i++) {
      const n = this.next;
      this.next = n >= 254 * 256 + 255 ? 256 : n + 1;
      const ip = `169.254.${n >> 8}.${n & 255}`;
      if ((n & 255) === 0 || (n & 255) === 255 || ip === '169.254.169.254' || this.used.has(ip) || this.taken(ip)) continue;
      this.used.add(ip);
      return ip;
    }
    throw new RangeError('identity range exhausted');
  }

  /** Takes a given identity (one an app already holds, after a daemon restart) if it is in the range and free. */
  reserve(ip: string): boolean {
    const m = /^169\.254\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
    if (!m) return false;
    const hi = Number(m[1]);
    const lo = Number(m[2]);
    if (hi < 1 || hi > 254 || lo < 1 || lo > 254 || ip === '169.254.169.254' || this.used.has(ip) || this.taken(ip)) return false;
    this.used.add(ip);
    return true;
  }

  release(ip: string): void {
    this.used.delete(ip);
  }
}
