/** The daemon's EdgeSource: this node's edges (node scope), or every live member's (cluster scope). Each node owns
 * the edges of its own clients, so the cluster's edges are the union of the answers: this node's own, and each other
 * live member's, asked over the authenticated peer API in parallel with a timeout (default 1 s). A member that does
 * not answer in time (or answers garbage) is listed in `missing`, one whose list was cut at MAX_EDGES_PER_ANSWER in
 * `truncated`. */
import type { EdgeAnswer } from './edge-wire.js';
import { MAX_EDGES_PER_ANSWER } from './edge-wire.js';
import type { EdgeSource, EdgesView, EdgeView } from './types.js';

export const CLUSTER_TIMEOUT_MS = 1000;

export interface EdgeClusterDeps {
  node: string;
  /** This node's edges now, at most `limit` (see EdgeStore.views, after setActive). */
  local: (limit: number) => { edges: EdgeView[]; truncated: boolean };
  /** The other members to ask (alive or suspect), with their addresses; empty while the cluster is not up. */
  members: () => Array<{ name: string; address: string }>;
  /** Asks one member for its edges (PeerApi.edges); undefined when it did not answer. */
  ask: (address: string, node: string, timeoutMs: number) => Promise<EdgeAnswer | undefined>;
  timeoutMs?: number;
}

export class ClusterEdges implements EdgeSource {
  constructor(private readonly deps: EdgeClusterDeps) {}

  async edges(scope: 'node' | 'cluster'): Promise<EdgesView> {
    const { deps } = this;
    const own = deps.local(scope === 'node' ? Infinity : MAX_EDGES_PER_ANSWER);
    const view: EdgesView = { scope, node: deps.node, edges: own.edges, missing: [], truncated: own.truncated ? [deps.node] : [] };
    if (scope === 'node') return view;
    const timeout = deps.timeoutMs ?? CLUSTER_TIMEOUT_MS;
    const members = deps.members().filter((m) => m.name !== deps.node);
    const answers = await Promise.all(
      members.map((m) =>
        deps.ask(m.address, m.name, timeout).then(
          (a) => a,
          () => undefined,
        ),
      ),
    );
    members.forEach((m, i) => {
      const a = answers[i];
      if (!a) {
        view.missing.push(m.name);
        return;
      }
      for (const e of a.edges) view.edges.push(e);
      if (a.truncated) view.truncated.push(m.name);
    });
    view.missing.sort();
    view.truncated.sort();
    return view;
  }
}
