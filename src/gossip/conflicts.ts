// Name conflicts: another live process gossiping under this node's name from another address (cloned VMs or
// containers with one hostname, a copied config). SWIM keys members by name, so two such nodes never see each other
// as members: each refutes the other's alive as a rumour about itself, and each sees only itself. Pure: probing goes
// through the injected `check`, time through the clock, output through the logger; no I/O of its own.
//
// An alive about our name from another address is not proof: it may be an older process of ours (restarted at a new
// address) whose rumour is still travelling. So it is checked: a ping naming our name sent to that address is
// answered only by a live process that has our name (pings naming anyone else are dropped). An answer makes it a
// conflict, logged as an error ("conflicting address", as hashicorp/memberlist says) on both nodes — each checks the
// other — and listed by `list()` until that address stops answering to our name (MISSES checks in a row).

import type { Clock } from './clock.js';
import type { GossipLogger } from './log.js';

/** A live node that uses this node's name from another address. */
export interface NameConflict {
  /** The contested name (this node's). */
  name: string;
  /** This node's gossip address. */
  address: string;
  /** The other node's gossip address. */
  otherAddress: string;
  /** When this node found it (clock ms). */
  since: number;
}

/** Checks in a row that the other address must leave unanswered before the conflict is taken as over. */
export const CONFLICT_MISSES = 3;

/** Addresses checked at once at most: alives from ever new addresses (a forger inside the cluster) cost bounded work. */
const MAX_CHECKS = 16;
/** Conflicts kept at most. */
const MAX_CONFLICTS = 64;

export interface NameConflictDeps {
  name: string;
  /** This node's gossip address. */
  address: () => string;
  /** Pings `address` naming this node's name; `done(true)` when it answered, `done(false)` when it did not in time. */
  check: (address: string, done: (answered: boolean) => void) => void;
  clock: Clock;
  logger: GossipLogger;
}

interface Entry {
  since: number;
  misses: number;
}

export class NameConflicts {
  private readonly known = new Map<string, Entry>();
  private readonly checking = new Set<string>();

  constructor(private readonly deps: NameConflictDeps) {}

  /** An alive about this node's name came from `address` (not ours). Starts a check unless one runs; returns whether
   * `address` is a known conflict (the caller does not refute it then: refuting a live node only starts a war of
   * incarnations that flips every other member's view of the name between the two addresses). */
  heard(address: string): boolean {
    this.check(address);
    return this.known.has(address);
  }

  /** Checks every known conflict again (called once per probe interval). */
  tick(): void {
    for (const address of this.known.keys()) this.check(address);
  }

  /** Whether any conflict is known: then records of our name that come from others are another node's, and this
   * node does not answer them (neither refutations nor reissued keys: each would be answered back, for ever). */
  get active(): boolean {
    return this.known.size > 0;
  }

  list(): NameConflict[] {
    return [...this.known].map(([otherAddress, e]) => ({ name: this.deps.name, address: this.deps.address(), otherAddress, since: e.since }));
  }

  private check(address: string): void {
    if (this.checking.has(address) || this.checking.size >= MAX_CHECKS) return;
    if (!this.known.has(address) && this.known.size >= MAX_CONFLICTS) return;
    this.checking.add(address);
    this.deps.check(address, (answered) => {
      this.checking.delete(address);
      this.result(address, answered);
    });
  }

  private result(address: string, answered: boolean): void {
    const e = this.known.get(address);
    const { name, logger } = this.deps;
    const fields = { node: name, mine: this.deps.address(), theirs: address };
    if (answered) {
      if (e) {
        e.misses = 0;
        return;
      }
      this.known.set(address, { since: this.deps.clock.now(), misses: 0 });
      (logger.error ?? logger.warn).call(
        logger,
        fields,
        `gossip: conflicting address for node ${name}: mine ${fields.mine}, theirs ${address}: another live node uses this node's name, and neither can see the other; give every node a unique --node-name`,
      );
      return;
    }
    if (!e) return;
    if (++e.misses < CONFLICT_MISSES) return;
    this.known.delete(address);
    logger.info(fields, `gossip: the node at ${address} no longer answers to the name ${name}: conflict over`);
  }
}
