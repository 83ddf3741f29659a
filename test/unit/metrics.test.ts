/** The daemon's metrics registry with fake sources: AS_STATS deltas folded into the trap counter and latency
 * histogram, and the scrape-time values read from what the sources say. */
import { describe, expect, it } from 'vitest';
import { DaemonMetrics, type GossipCounters, type HandlerCounters, resultLabel, syscallLabel } from '../../src/daemon/metrics.js';
import { STATS_BOUNDS_NS, STATS_BUCKETS, STATS_OTHER } from '../../src/trap/protocol.js';

/** Series line (name and labels as rendered) -> value. */
async function series(m: DaemonMetrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await m.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function buckets(at: Record<number, number>): number[] {
  const b = new Array<number>(STATS_BUCKETS).fill(0);
  for (const [i, n] of Object.entries(at)) b[Number(i)] = n;
  return b;
}

function fixture(): { m: DaemonMetrics; handler: HandlerCounters; gossip: { v: GossipCounters | undefined }; fds: { n: number } } {
  const handler: HandlerCounters = { denied: 0, refused: 0, tcpConnections: 0, fastpathConnections: 0, daemonPortRefused: 0, limitServices: 0, limitOffers: 0, limitPending: 0 };
  const gossip: { v: GossipCounters | undefined } = { v: undefined };
  const fds = { n: 17 };
  const m = new DaemonMetrics({
    handler: () => handler,
    services: () => ({ local: 2, remote: 3 }),
    apps: () => 4,
    gossip: () => gossip.v,
    openFds: () => fds.n,
  });
  return { m, handler, gossip, fds };
}

describe('DaemonMetrics', () => {
  it('folds trap counts: syscall and result labels, accumulating over deltas', async () => {
    const { m } = fixture();
    m.foldTrapStats({
      counts: [
        { syscall: 42, errno: 0, count: 5 },
        { syscall: 42, errno: 111, count: 2 },
        { syscall: 49, errno: 98, count: 1 },
        { syscall: 288, errno: 0, count: 3 },
        { syscall: STATS_OTHER, errno: 38, count: 1 },
        { syscall: 41, errno: STATS_OTHER, count: 1 },
        { syscall: 41, errno: 0, count: 0 },
      ],
      latency: [],
    });
    m.foldTrapStats({ counts: [{ syscall: 42, errno: 111, count: 4 }], latency: [] });
    const s = await series(m);
    expect(s.get('appswitch_traps_total{syscall="connect",result="ok"}')).toBe(5);
    expect(s.get('appswitch_traps_total{syscall="connect",result="ECONNREFUSED"}')).toBe(6);
    expect(s.get('appswitch_traps_total{syscall="bind",result="EADDRINUSE"}')).toBe(1);
    expect(s.get('appswitch_traps_total{syscall="accept4",result="ok"}')).toBe(3);
    expect(s.get('appswitch_traps_total{syscall="other",result="ENOSYS"}')).toBe(1);
    expect(s.get('appswitch_traps_total{syscall="socket",result="other"}')).toBe(1);
    expect(s.has('appswitch_traps_total{syscall="socket",result="ok"}')).toBe(false); // a zero count adds no series
  });

  it('folds pre-bucketed latencies into a Prometheus histogram: cumulative le buckets, +Inf, _sum, _count', async () => {
    const { m } = fixture();
    const le = (ns: number): string => String(ns / 1e9);
    // 2 at <= 5 us, 1 in (50, 100] us, 1 above the last bound
    m.foldTrapStats({ counts: [], latency: [{ syscall: 51, sumNs: 2_000_000_000, buckets: buckets({ 0: 2, 4: 1, [STATS_BUCKETS - 1]: 1 }) }] });
    m.foldTrapStats({ counts: [], latency: [{ syscall: 51, sumNs: 500_000_000, buckets: buckets({ 4: 1 }) }] });
    m.foldTrapStats({ counts: [], latency: [{ syscall: 42, sumNs: 1000, buckets: [1, 2] }] }); // wrong length: ignored
    const s = await series(m);
    const b = (bound: string): number | undefined => s.get(`appswitch_trap_duration_seconds_bucket{syscall="getsockname",le="${bound}"}`);
    expect(b(le(STATS_BOUNDS_NS[0] as number))).toBe(2);
    expect(b(le(STATS_BOUNDS_NS[3] as number))).toBe(2);
    expect(b(le(STATS_BOUNDS_NS[4] as number))).toBe(4);
    expect(b(le(STATS_BOUNDS_NS[STATS_BOUNDS_NS.length - 1] as number))).toBe(4);
    expect(b('+Inf')).toBe(5);
    expect(s.get('appswitch_trap_duration_seconds_count{syscall="getsockname"}')).toBe(5);
    expect(s.get('appswitch_trap_duration_seconds_sum{syscall="getsockname"}')).toBe(2.5);
    expect([...s.keys()].some((k) => k.includes('syscall="connect"'))).toBe(false);
    const text = await m.text();
    expect(text).toMatch(/^# TYPE appswitch_trap_duration_seconds histogram$/m);
    expect(text).toMatch(/^# HELP appswitch_trap_duration_seconds \S/m);
    // the JSON form agrees
    const json = await m.registry.getMetricsAsJSON();
    const h = json.find((x) => x.name === 'appswitch_trap_duration_seconds');
    expect(h?.values.find((v) => v.labels.le === '+Inf')?.value).toBe(5);
  });

  it('reads handler counters, services, apps, members, gossip and fds at scrape time', async () => {
    const { m, handler, gossip, fds } = fixture();
    let s = await series(m);
    expect(s.get('appswitch_policy_denials_total')).toBe(0);
    expect(s.get('appswitch_members{state="alive"}')).toBe(1); // no cluster yet: this node
    expect(s.get('appswitch_daemon_open_fds')).toBe(17);
    expect([...s.keys()].some((k) => k.startsWith('appswitch_gossip_'))).toBe(false);
    handler.denied = 3;
    handler.refused = 2;
    handler.tcpConnections = 7;
    handler.fastpathConnections = 9;
    fds.n = 21;
    gossip.v = {
      packets: { bytesSent: 1000, bytesReceived: 900 },
      streams: { bytesSent: 50, bytesReceived: 40 },
      messages: { sent: { ping: 4, ack: 1 }, received: { ping: 2, ack: 3 } },
      members: { alive: 2, suspect: 1, dead: 0, left: 1 },
    };
    s = await series(m);
    expect(s.get('appswitch_policy_denials_total')).toBe(3);
    expect(s.get('appswitch_connects_refused_total')).toBe(2);
    expect(s.get('appswitch_connections_total{kind="tcp"}')).toBe(7);
    expect(s.get('appswitch_connections_total{kind="fastpath"}')).toBe(9);
    expect(s.get('appswitch_services{scope="local"}')).toBe(2);
    expect(s.get('appswitch_services{scope="remote"}')).toBe(3);
    expect(s.get('appswitch_apps')).toBe(4);
    expect(s.get('appswitch_members{state="alive"}')).toBe(2);
    expect(s.get('appswitch_members{state="suspect"}')).toBe(1);
    expect(s.get('appswitch_members{state="left"}')).toBe(1);
    expect(s.get('appswitch_gossip_messages_total{direction="sent",type="ping"}')).toBe(4);
    expect(s.get('appswitch_gossip_messages_total{direction="received",type="ack"}')).toBe(3);
    expect(s.get('appswitch_gossip_bytes_total{direction="sent",transport="udp"}')).toBe(1000);
    expect(s.get('appswitch_gossip_bytes_total{direction="received",transport="tcp"}')).toBe(40);
    expect(s.get('appswitch_daemon_open_fds')).toBe(21);
    // a second scrape reports the same cumulative values, not twice them
    handler.denied = 4;
    s = await series(m);
    expect(s.get('appswitch_policy_denials_total')).toBe(4);
    expect(s.get('appswitch_gossip_messages_total{direction="sent",type="ping"}')).toBe(4);
    // prom-client's default process metrics are there too
    expect(s.has('process_cpu_seconds_total')).toBe(true);
  });

  it('names results and syscalls', () => {
    expect(resultLabel(0)).toBe('ok');
    expect(resultLabel(111)).toBe('ECONNREFUSED');
    expect(resultLabel(11)).toMatch(/^(EAGAIN|EWOULDBLOCK)$/);
    expect(resultLabel(STATS_OTHER)).toBe('other');
    expect(resultLabel(4000)).toBe('errno_4000');
    expect(syscallLabel(41)).toBe('socket');
    expect(syscallLabel(307)).toBe('sendmmsg');
    expect(syscallLabel(STATS_OTHER)).toBe('other');
  });
});
