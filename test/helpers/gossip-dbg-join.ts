import { Memberlist, MemoryNetwork, seededRandom } from '../../src/gossip/index.js';
const n = 100;
const net = new MemoryNetwork({ seed: 5, latencyMs: 1, jitterMs: 2 });
const clock = net.clock;
const nodes: Memberlist[] = [];
for (let i = 0; i < n; i++) {
  const addr = `m${i}.sim:7946`;
  nodes.push(new Memberlist({ name: `m${i}`, transport: net.createTransport(addr), clock: net.clockFor(addr), random: seededRandom(i + 1) }));
}
for (let i = 1; i < n; i++) clock.setTimeout(() => { nodes[i]!.join([nodes[0]!.address]).catch(() => {}); }, i * 5);
for (let step = 0; step < 40; step++) {
  clock.advance(1000);
  const counts = nodes.map((m) => m.numAlive());
  const min = Math.min(...counts);
  const lacking = counts.filter((c) => c < n).length;
  const q = nodes.map((m) => m.stats().broadcastQueue);
  console.log(`t=${step + 1}s min=${min} lacking=${lacking} maxq=${Math.max(...q)} sumq=${q.reduce((a, b) => a + b, 0)}`);
  if (lacking === 0) break;
  if (step === 0) { const st = nodes[0]!.stats(); console.log(JSON.stringify({d: st.dropped, c: st.capped, ms: st.messages.sent, p: st.protocol})); const st2 = nodes[19]!.stats(); console.log(JSON.stringify({d: st2.dropped, c: st2.capped, mr: st2.messages.received, ms: st2.messages.sent, p: st2.protocol, h: st2.health})); }
  if (step === 3) {
    // who is missing whom
    const missing = new Map<string, number>();
    for (const m of nodes) { const names = new Set(m.members().filter((x) => x.state === 'alive').map((x) => x.name)); for (const o of nodes) if (!names.has(o.name)) missing.set(o.name, (missing.get(o.name) ?? 0) + 1); }
    console.log([...missing].slice(0, 20));
    for (const m of nodes) { const names = new Set(m.members().filter((x) => x.state === 'alive').map((x) => x.name)); const miss = nodes.filter((o) => !names.has(o.name)).map((o) => o.name); if (miss.length) console.log(m.name, 'misses', miss.join(','), 'known', m.members().length, JSON.stringify(m.members().filter(x=>miss.includes(x.name)))); }
  }
}
