/** The ingress pick: which instance of an exposed service an external connection goes to. Every instance of the
 * service may be picked (the exposure is the policy for outside clients), by the service's strategy
 * (table/balancer.ts), instances on live nodes first, instances of the client's address family preferred, never one
 * that already refused this connection. Pure apart from the balancer's counters: no I/O. */
import { Balancer, type LbStrategy } from '../table/balancer.js';
import { type Endpoint, endpointKey } from '../table/endpoint.js';
import { familyOf, preferFamily } from '../table/family.js';
import type { ServiceEntry, ServiceTable } from '../table/service-table.js';

/** How many instances one external connection tries (the next one on ECONNREFUSED) before it is refused. */
export const MAX_TRIES = 8;

export interface PickDeps {
  table: Pick<ServiceTable, 'lookup'>;
  /** The daemon's default strategy (a service may carry its own). */
  lb: LbStrategy;
  /** Whether a node is alive (the daemon's nodeAlive); instances elsewhere are tried only when no live one is left. */
  nodeAlive: (node: string) => boolean;
  balancer?: Balancer;
}

export class IngressPicker {
  readonly balancer: Balancer;

  constructor(private readonly deps: PickDeps) {
    this.balancer = deps.balancer ?? new Balancer();
  }

  /** The instance of vip:port (TCP) for a connection from `client`, skipping the real endpoints in `tried`. */
  pick(vip: string, port: number, client: Endpoint, tried: ReadonlySet<string>): ServiceEntry | undefined {
    let instances = this.deps.table.lookup({ vip, port, proto: 'tcp' }).filter((e) => !tried.has(endpointKey(e.endpoint)));
    if (instances.length === 0) return undefined;
    instances = preferFamily(instances, familyOf(client.ip.replace(/^::ffff:/i, '')));
    const alive = instances.filter((e) => this.deps.nodeAlive(e.node));
    if (alive.length) instances = alive;
    const pick = this.balancer.pick(instances, instances[0]?.lb ?? this.deps.lb, `ingress/${vip}/${port}`);
    if (pick) this.balancer.noteConnect(pick);
    return pick;
  }
}
