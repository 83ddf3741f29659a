/** The daemon's events and edges, wired in one place (src/events): the bus, this node's edge store with its bounded
 * Prometheus series, the cluster view of the edges over the peer API, and the recorder that the trap side, the app
 * directory, the service table and the cluster report their decisions to. */
import { EventBus } from '../events/bus.js';
import { ClusterEdges } from '../events/edge-cluster.js';
import { SeriesTable } from '../events/edge-series.js';
import { EdgeStore } from '../events/edges.js';
import { appRef, DecisionRecorder } from '../events/recorder.js';
import type { AppDirectory } from '../table/directory.js';
import type { ServiceTable } from '../table/service-table.js';
import type { ServiceInfo } from '../trap/connections.js';
import type { Cluster } from './cluster.js';
import type { PeerApi } from './peers.js';

export interface EventParts {
  nodeName: string;
  /** --metrics-max-series (default 200). */
  maxSeries?: number;
  table: ServiceTable;
  directory: AppDirectory;
  /** A virtual service's name by its vip. */
  vserviceName: (ip: string) => string | undefined;
  /** This node's apps (an app the directory no longer lists may still report a last connect). */
  localApp: (appId: string) => { identity: string; name?: string } | undefined;
  /** The service instance at a real endpoint "ip:port" (the connection tracker's look-up). */
  serviceAt: (endpoint: string) => ServiceInfo | undefined;
  /** The open connections of this node's clients: client app id and "vip:port" of each. */
  openConnections: (visit: (appId: string, service: string) => void) => void;
  cluster: () => Cluster | undefined;
  peers: () => PeerApi | undefined;
}

export interface EventWiring {
  events: EventBus;
  edgeStore: EdgeStore;
  edges: ClusterEdges;
  recorder: DecisionRecorder;
  /** Brings the edges' clock to now and sets their open connections (before a view, a scrape, a prune). */
  refreshActive: () => void;
}

export function setUpEvents(p: EventParts): EventWiring {
  const node = p.nodeName;
  const events = new EventBus(node);
  const serviceName = (vip: string, port: number): string | null =>
    p.table.lookup({ vip, port, proto: 'tcp' })[0]?.name ?? p.table.lookup({ vip, port, proto: 'udp' })[0]?.name ?? p.directory.nameOf(vip) ?? p.vserviceName(vip) ?? null;
  const edgeStore = new EdgeStore({
    client: (appId) => {
      const a = p.directory.get(appId) ?? p.localApp(appId);
      return a ? appRef({ id: appId, node, identity: a.identity, name: a.name }) : undefined;
    },
    serviceName,
    series: new SeriesTable(p.maxSeries),
  });
  const recorder = new DecisionRecorder({ node, bus: events, edges: edgeStore, app: (id) => p.directory.get(id), serviceName, serviceAt: p.serviceAt });
  p.directory.on('added', (a) => recorder.appStarted(a));
  p.directory.on('removed', (a) => recorder.appEnded(a));
  p.table.on('added', (e) => recorder.serviceUp(e));
  p.table.on('removed', (e) => recorder.serviceDown(e));
  const refreshActive = (): void => {
    edgeStore.tick(Date.now());
    edgeStore.setActive(p.openConnections);
  };
  const edges = new ClusterEdges({
    node,
    local: (limit) => {
      refreshActive();
      return edgeStore.views(limit);
    },
    members: () =>
      (p.cluster()?.daemons() ?? []).filter((d) => d.node !== node && (d.state === 'alive' || d.state === 'suspect')).map((d) => ({ name: d.node, address: d.address })),
    ask: (address, member, timeoutMs) => p.peers()?.edges(address, member, timeoutMs) ?? Promise.resolve(undefined),
  });
  return { events, edgeStore, edges, recorder, refreshActive };
}
