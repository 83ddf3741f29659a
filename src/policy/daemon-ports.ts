/** The appswitch daemons' own doors, closed to trapped programs: which destination addresses and ports (on any node
 * of the cluster) a program may never reach directly — the daemon ports (gossip UDP+TCP, peer API TCP, metrics TCP,
 * DNS UDP+TCP, an egress gateway's egress proxy TCP) and the port pool, whose real service endpoints are reached only through a vip decision (which
 * applies policy). The one exception is this node's own DNS server, the resolver that programs use through the
 * resolv.conf appswitch mounts for them. Pure: no I/O; the daemon feeds it the member list and each node's ports. */

export type GuardProto = 'tcp' | 'udp';

/** What a daemon listens on, and its port pool. One record per node, from its `@node` gossip record (the daemon falls
 * back to its own values until that record arrives). */
export interface DaemonPorts {
  /** SWIM gossip, UDP and TCP. */
  gossip: number;
  /** Peer API (who is this client endpoint), TCP. */
  peer: number;
  /** Built-in DNS server, UDP and TCP. */
  dns: number;
  /** Prometheus endpoint, TCP, when the node serves one. */
  metrics?: number;
  /** The live view, TCP, when the node serves it on a non-loopback address. */
  ui?: number;
  /** Egress proxy (an egress gateway's, TCP), when the node is one. */
  egress?: number;
  /** Real ports handed to servers under appswitch. */
  pool: { low: number; high: number };
}

/** Why a destination is closed: which daemon door it is. */
export type DaemonPortKind = 'gossip' | 'peer' | 'dns' | 'metrics' | 'pool' | 'egress' | 'exposure' | 'api' | 'ui';

/** One closed door: `proto` ports low..high on one address. */
export interface ClosedPorts {
  address: string;
  proto: GuardProto;
  low: number;
  high: number;
  kind: DaemonPortKind;
}

/** The closed doors of one node at `address`. `self`: this node, whose DNS port stays open (the resolver path). */
export function nodeDoors(address: string, ports: DaemonPorts, self: boolean): ClosedPorts[] {
  const one = (proto: GuardProto, port: number, kind: DaemonPortKind): ClosedPorts => ({ address, proto, low: port, high: port, kind });
  const out: ClosedPorts[] = [one('udp', ports.gossip, 'gossip'), one('tcp', ports.gossip, 'gossip'), one('tcp', ports.peer, 'peer')];
  if (!self) out.push(one('udp', ports.dns, 'dns'), one('tcp', ports.dns, 'dns'));
  if (ports.metrics !== undefined) out.push(one('tcp', ports.metrics, 'metrics'));
  if (ports.ui !== undefined) out.push(one('tcp', ports.ui, 'ui'));
  if (ports.egress !== undefined) out.push(one('tcp', ports.egress, 'egress')); /* reached only through a gateway decision */
  for (const proto of ['tcp', 'udp'] as const) out.push({ address, proto, low: ports.pool.low, high: ports.pool.high, kind: 'pool' });
  return out;
}

/** Answers, for a destination a program names, whether it is a daemon's door. Addresses are compared in the
 * canonical text form the trap protocol decodes (IPv4 dotted, v4-mapped IPv6 shown as IPv4, IPv6 compressed). */
export class DaemonPortGuard {
  private byAddress = new Map<string, ClosedPorts[]>();

  /** Replaces every closed door (called when the member list changes). */
  set(doors: readonly ClosedPorts[]): void {
    const m = new Map<string, ClosedPorts[]>();
    for (const d of doors) {
      let l = m.get(d.address);
      if (!l) m.set(d.address, (l = []));
      l.push(d);
    }
    this.byAddress = m;
  }

  /** The kind of daemon door `ip:port` over `proto` is, or undefined when a program may send there. */
  check(ip: string, port: number, proto: GuardProto): DaemonPortKind | undefined {
    const l = this.byAddress.get(ip);
    if (!l) return undefined;
    for (const d of l) if (d.proto === proto && port >= d.low && port <= d.high) return d.kind;
    return undefined;
  }

  /** Addresses with at least one closed door. */
  get addresses(): number {
    return this.byAddress.size;
  }
}
