/** Stand-ins for the event and edge sources until the daemon has real ones (src/events/, issue 15): an EventSource
 * whose subscriptions never yield an event, and an EdgeSource that answers an empty node-scope view. The routes
 * behind them (/v1/events, /v1/edges) are complete; swapping these for the real sources changes nothing else. */
import type { AppswitchEvent, EdgeSource, EdgesView, EventSource, Subscription } from '../events/types.js';

/** An EventSource that never yields: next() waits until close(), then rejects. `open` counts the subscriptions not
 * yet closed (a test reads it through the daemon to see that a client that went away released its own). */
export function unavailableEvents(): EventSource & { readonly open: number } {
  let open = 0;
  return {
    get open(): number {
      return open;
    },
    subscribe(): Subscription {
      open++;
      let closed = false;
      let wake: ((e: Error) => void) | undefined;
      return {
        next(): Promise<AppswitchEvent[]> {
          if (closed) return Promise.reject(new Error('subscription closed'));
          return new Promise((_, reject) => (wake = reject));
        },
        close(): void {
          if (closed) return;
          closed = true;
          open--;
          wake?.(new Error('subscription closed'));
          wake = undefined;
        },
      };
    },
  };
}

/** An EdgeSource with no edges: a node-scope view of `node`, whatever scope is asked for. */
export function unavailableEdges(node: string): EdgeSource {
  return {
    edges(): Promise<EdgesView> {
      return Promise.resolve({ scope: 'node', node, edges: [], missing: [], truncated: [] });
    },
  };
}
