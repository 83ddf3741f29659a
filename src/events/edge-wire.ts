/** Edges on the peer API's wire (daemon/peers.ts, the `edges` request): each edge is a flat JSON array, a node's answer
 * is cut into lines that stay under the peer API's line limit, and an answer is decoded here, once, into EdgeViews —
 * an element that is not a valid edge of the answering node is dropped and counted, never passed on.
 *
 *   [app, name|null, identity, node, vip, port, serviceName|null, connections, active, ratePerSecond, refused, denied,
 *    fastpath, tcp, lastSeenMs] */
import type { EdgeView } from './types.js';

/** Edges one node puts in an answer at most (the rest: `truncated`). */
export const MAX_EDGES_PER_ANSWER = 5000;

export type EdgeTuple = [string, string | null, string, string, string, number, string | null, number, number, number, number, number, number, number, number];

export function encodeEdge(e: EdgeView): EdgeTuple {
  return [
    e.client.app,
    e.client.name,
    e.client.identity,
    e.client.node,
    e.service.vip,
    e.service.port,
    e.service.name,
    e.connections,
    e.active,
    e.ratePerSecond,
    e.refused,
    e.denied,
    e.fastpath,
    e.tcp,
    Date.parse(e.lastSeen),
  ];
}

/** Cuts the tuples into groups whose JSON stays under `budget` characters each (a tuple longer than that alone is
 * left out: it cannot be a valid edge). */
export function chunkEdges(tuples: readonly EdgeTuple[], budget: number): EdgeTuple[][] {
  const out: EdgeTuple[][] = [];
  let cur: EdgeTuple[] = [];
  let len = 0;
  for (const t of tuples) {
    const n = JSON.stringify(t).length + 1;
    if (n > budget) continue;
    if (len + n > budget && cur.length) {
      out.push(cur);
      cur = [];
      len = 0;
    }
    cur.push(t);
    len += n;
  }
  if (cur.length) out.push(cur);
  return out;
}

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;
const optStr = (v: unknown, max: number): v is string | null => v === null || str(v, max);
const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** One element of a node's answer as an EdgeView of that node, or undefined when it is not one (wrong shape, a value
 * out of range, or an edge of another node's client: each node answers for its own clients only). */
export function decodeEdge(v: unknown, node: string): EdgeView | undefined {
  if (!Array.isArray(v) || v.length !== 15) return undefined;
  const [app, name, identity, edgeNode, vip, port, sname, connections, active, rate, refused, denied, fastpath, tcp, last] = v as unknown[];
  if (!str(app, 64) || !optStr(name, 253) || !str(identity, 64) || edgeNode !== node || !str(vip, 64) || !optStr(sname, 253)) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  if (![connections, active, refused, denied, fastpath, tcp].every(count)) return undefined;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) return undefined;
  if (typeof last !== 'number' || !Number.isFinite(last) || last < 0 || last > 8.64e15) return undefined;
  return {
    client: { app, name, identity, node },
    service: { vip, port, name: sname },
    connections: connections as number,
    active: active as number,
    ratePerSecond: rate,
    refused: refused as number,
    denied: denied as number,
    fastpath: fastpath as number,
    tcp: tcp as number,
    lastSeen: new Date(last).toISOString(),
  };
}

/** Gathers one node's answer, line by line: at most MAX_EDGES_PER_ANSWER edges are kept (past that the answer
 * counts as truncated); malformed elements are counted. */
export class EdgeAnswer {
  readonly edges: EdgeView[] = [];
  truncated = false;
  malformed = 0;

  constructor(readonly node: string) {}

  /** Adds a line's `edges` value; false when the value is not a list at all (the answer is malformed). */
  add(list: unknown): boolean {
    if (!Array.isArray(list)) return false;
    for (const v of list) {
      if (this.edges.length >= MAX_EDGES_PER_ANSWER) {
        this.truncated = true;
        return true;
      }
      const e = decodeEdge(v, this.node);
      if (e) this.edges.push(e);
      else this.malformed++;
    }
    return true;
  }
}
