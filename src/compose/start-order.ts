/** The order services start in: every dependency known, no cycle, dependencies first and, among services free to
 * start, the earlier in the file first (Kahn's algorithm with a heap: linear in the file, whatever its size). Pure. */
import { q } from './file-error.js';
import type { ReadService } from './service-spec.js';
import type { ServiceSpec } from './types.js';
import { nearest } from './yaml-reader.js';

/** Why the order cannot be made: the message and the line to blame. */
export interface OrderProblem {
  line: number;
  message: string;
}

/** The services in start order, or the first problem: an unknown dependency (in file order), else a cycle. */
export function startOrder(read: ReadService[]): ServiceSpec[] | OrderProblem {
  const index = new Map(read.map((s, i) => [s.spec.name, i]));
  const names = read.map((s) => s.spec.name);
  for (const s of read) {
    for (const [j, dep] of s.spec.dependsOn.entries()) {
      if (index.has(dep)) continue;
      const near = nearest(dep, names.filter((n) => n !== s.spec.name));
      const hint = near === undefined ? '' : ` (did you mean ${q(near)}?)`;
      return { line: s.dependsOnLines[j] as number, message: `service ${q(s.spec.name)} depends on ${q(dep)}, which is not a service in this file${hint}` };
    }
  }
  const deps = read.map((s) => s.spec.dependsOn.map((d) => index.get(d) as number));
  const waiting = deps.map((d) => d.length);
  const dependents: number[][] = read.map(() => []);
  deps.forEach((ds, i) => ds.forEach((d) => dependents[d]?.push(i)));
  const heap = new MinHeap();
  waiting.forEach((w, i) => w === 0 && heap.push(i));
  const order: ServiceSpec[] = [];
  for (let i = heap.pop(); i !== undefined; i = heap.pop()) {
    order.push((read[i] as ReadService).spec);
    for (const d of dependents[i] as number[]) {
      waiting[d] = (waiting[d] as number) - 1;
      if (waiting[d] === 0) heap.push(d);
    }
  }
  if (order.length === read.length) return order;
  return cycleProblem(read, deps, waiting);
}

/** Names one cycle among the services left waiting. Each of them waits for another one left waiting (else it would
 * have started), so following the first such dependency from any of them must come back to a service seen before. */
function cycleProblem(read: ReadService[], deps: number[][], waiting: number[]): OrderProblem {
  const stuck = (i: number): boolean => (waiting[i] as number) > 0;
  const start = waiting.findIndex((w) => w > 0);
  const seenAt = new Map<number, number>();
  const path: number[] = [];
  let at = start;
  while (!seenAt.has(at)) {
    seenAt.set(at, path.length);
    path.push(at);
    at = (deps[at] as number[]).find(stuck) as number;
  }
  const cycle = path.slice(seenAt.get(at));
  /* begin with the member that comes first in the file, so the message does not depend on where the walk began */
  const first = cycle.indexOf(cycle.reduce((m, i) => Math.min(m, i)));
  const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
  const names = [...rotated, rotated[0] as number].map((i) => (read[i] as ReadService).spec.name);
  const head = read[rotated[0] as number] as ReadService;
  const line = head.dependsOnLines[head.spec.dependsOn.indexOf(names[1] as string)] as number;
  return { line, message: `dependency cycle: ${names.join(' -> ')}` };
}

/** A binary min-heap of service indexes (file order). */
class MinHeap {
  private readonly a: number[] = [];

  push(v: number): void {
    const a = this.a;
    a.push(v);
    for (let i = a.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if ((a[p] as number) <= v) break;
      a[i] = a[p] as number;
      a[p] = v;
      i = p;
    }
  }

  pop(): number | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    a[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && (a[l] as number) < (a[m] as number)) m = l;
      if (r < a.length && (a[r] as number) < (a[m] as number)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m] as number, a[i] as number];
      i = m;
    }
    return top;
  }
}
