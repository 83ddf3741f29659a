/** What `appswitch get connections` shows of a connection, and what a sweep knows of the open ones: shared by the
 * tracker (connections.ts) and the outside clients' ring (outside-connections.ts). */

/** One connection as the control API shows it (fixed keys; `null` where a value is unknown). */
export interface ConnectionView {
  /** "out": a client on this node; "in": a client on another node reached a server on this node. */
  direction: 'out' | 'in';
  /** tcp: a real TCP connection; fastpath: a Unix socket pair between two programs of this node. */
  path: 'tcp' | 'fastpath';
  /** The client's identity (its vip, or its 169.254.x.y address) and app id. */
  client: string;
  clientApp: string;
  /** The client socket's real local endpoint (for the fast path: the placeholder connection's). */
  clientEndpoint: string;
  /** The virtual endpoint (vip:port) the client asked for, when the service is known here. */
  service: string | null;
  /** The real endpoint of the server instance picked. */
  endpoint: string;
  /** The server's app id and node, when known. */
  serverApp: string | null;
  serverNode: string | null;
  /** Whether the server's accept() returned it. */
  accepted: boolean;
  /** The client's and the server's app names, where known (filled in by the daemon from its app directory). */
  clientName?: string | null;
  serverName?: string | null;
  /** When it was reported (ISO 8601) and how long ago (seconds). */
  since: string;
  ageSeconds: number;
}

/** Live-socket facts of one sweep, read after `takenAt`. */
export interface ConnectionSnapshot {
  /** Local and remote endpoints ("ip:port") of every TCP socket whose own side has not closed it. */
  tcpLocal: Set<string>;
  tcpRemote: Set<string>;
  /** Inodes of every Unix socket; undefined when not read (no fast-path entries to check). */
  unixInodes?: Set<string>;
  takenAt: number;
}
