// Protocol timing profiles (lan / wan / local) and the caps on every queue and table of the gossip layer.

import { GossipError } from './errors.js';
import { DEFAULT_MAX_STREAM_BYTES, MAX_PACKET_SIZE } from './transport.js';

/** Named timing profiles. */
export type ProfileName = 'lan' | 'wan' | 'local';

/** Protocol timings and fan-outs. All durations in milliseconds. */
export interface ProtocolConfig {
  /** Interval between failure-detector probes (scaled by local health). */
  probeInterval: number;
  /** Wait for a direct ack before asking `indirectChecks` members to probe (scaled by local health). */
  probeTimeout: number;
  /** Members asked to probe indirectly when a direct probe times out. */
  indirectChecks: number;
  /** Suspicion minimum = suspicionMult · max(1, log10(n)) · probeInterval. */
  suspicionMult: number;
  /** Suspicion maximum = suspicionMaxTimeoutMult · minimum. */
  suspicionMaxTimeoutMult: number;
  /** Lifeguard local-health multiplier ceiling. */
  awarenessMaxMultiplier: number;
  /** Interval of the gossip tick (piggyback-free dissemination). */
  gossipInterval: number;
  /** Members gossiped to per tick. */
  gossipNodes: number;
  /** Keep gossiping to dead/left members this long (lets them learn they were declared dead and refute). */
  gossipToTheDeadTime: number;
  /** Retransmit limit = retransmitMult · ceil(log10(n + 1)). */
  retransmitMult: number;
  /** Base push-pull (anti-entropy) interval; scaled up above 32 members. 0 disables periodic push-pull. */
  pushPullInterval: number;
  /** Interval at which a random dead (not left) member is retried with push-pull, so partitions heal. 0 = never. */
  reconnectInterval: number;
  /**
   * Minimum gap between push-pulls triggered by a membership-digest mismatch seen in an ack (repairs the rare
   * member that missed a rumour, without waiting for the periodic push-pull). 0 disables.
   */
  digestSyncInterval: number;
  /** Timeout of one stream exchange. */
  streamTimeout: number;
  /** Dead/left members (and their keys) are forgotten this long after the state change. */
  reapAfter: number;
  /** Tombstones of deleted keys are forgotten this long after the delete. */
  tombstoneTtl: number;
  /** First join retry delay; doubles up to `joinRetryMax`. */
  joinRetryInitial: number;
  joinRetryMax: number;
  /** Default time `leave()` waits for the leave broadcast to go out. */
  leaveTimeout: number;
  /** Bodies at least this large are deflated (when it helps). 0 disables compression. */
  compressThreshold: number;
  /** Packets/frames with a timestamp further than this from the local clock are dropped as stale. */
  replayMaxAge: number;
}

/** Caps (every queue and table is bounded). */
export interface GossipLimits {
  /** Largest datagram sent or accepted. */
  maxPacketSize: number;
  /** Largest stream frame (push-pull) sent or accepted, before and after decompression. */
  maxStreamBytes: number;
  /** Members in the table (new names beyond this are ignored). */
  maxMembers: number;
  /** Pending broadcasts (most-sent oldest evicted first). */
  maxBroadcasts: number;
  /** Live keys per node, and tombstones per node. */
  maxKeysPerNode: number;
  /** Bytes per value. */
  maxValueBytes: number;
  /** Indirect probes served concurrently for others. */
  maxRelays: number;
  /** Stream requests served concurrently. */
  maxInboundStreams: number;
  /** Sessions tracked by each replay guard. */
  maxReplaySessions: number;
}

/**
 * memberlist-derived profiles. LAN deviates from memberlist's DefaultLANConfig to meet the project targets
 * (dead host detected by everyone within 5 s, new key on every host within 1 s); docs/gossip.md explains why.
 */
export const PROFILES: Readonly<Record<ProfileName, ProtocolConfig>> = {
  lan: {
    probeInterval: 500,
    probeTimeout: 250,
    indirectChecks: 3,
    suspicionMult: 5,
    suspicionMaxTimeoutMult: 6,
    awarenessMaxMultiplier: 8,
    gossipInterval: 100,
    gossipNodes: 3,
    gossipToTheDeadTime: 30_000,
    retransmitMult: 4,
    pushPullInterval: 30_000,
    reconnectInterval: 10_000,
    digestSyncInterval: 10_000,
    streamTimeout: 10_000,
    reapAfter: 300_000,
    tombstoneTtl: 600_000,
    joinRetryInitial: 250,
    joinRetryMax: 10_000,
    leaveTimeout: 2_000,
    compressThreshold: 256,
    replayMaxAge: 60_000,
  },
  wan: {
    probeInterval: 5_000,
    probeTimeout: 3_000,
    indirectChecks: 3,
    suspicionMult: 6,
    suspicionMaxTimeoutMult: 6,
    awarenessMaxMultiplier: 8,
    gossipInterval: 500,
    gossipNodes: 4,
    gossipToTheDeadTime: 60_000,
    retransmitMult: 4,
    pushPullInterval: 60_000,
    reconnectInterval: 30_000,
    digestSyncInterval: 30_000,
    streamTimeout: 30_000,
    reapAfter: 900_000,
    tombstoneTtl: 1_800_000,
    joinRetryInitial: 1_000,
    joinRetryMax: 30_000,
    leaveTimeout: 10_000,
    compressThreshold: 256,
    replayMaxAge: 120_000,
  },
  local: {
    probeInterval: 1_000,
    probeTimeout: 200,
    indirectChecks: 1,
    suspicionMult: 3,
    suspicionMaxTimeoutMult: 6,
    awarenessMaxMultiplier: 8,
    gossipInterval: 100,
    gossipNodes: 3,
    gossipToTheDeadTime: 15_000,
    retransmitMult: 2,
    pushPullInterval: 15_000,
    reconnectInterval: 5_000,
    digestSyncInterval: 5_000,
    streamTimeout: 1_000,
    reapAfter: 60_000,
    tombstoneTtl: 300_000,
    joinRetryInitial: 100,
    joinRetryMax: 2_000,
    leaveTimeout: 1_000,
    compressThreshold: 256,
    replayMaxAge: 60_000,
  },
};

/** Default caps. */
export const DEFAULT_LIMITS: Readonly<GossipLimits> = {
  maxPacketSize: MAX_PACKET_SIZE,
  maxStreamBytes: DEFAULT_MAX_STREAM_BYTES,
  maxMembers: 4096,
  maxBroadcasts: 8192,
  maxKeysPerNode: 1024,
  maxValueBytes: 16 * 1024,
  maxRelays: 256,
  maxInboundStreams: 32,
  maxReplaySessions: 16_384,
};

/** Merges a profile with overrides and validates the result. @throws GossipError ERR_GOSSIP_BAD_CONFIG */
export function resolveConfig(profile: ProfileName, overrides: Partial<ProtocolConfig> = {}): ProtocolConfig {
  const base = PROFILES[profile];
  if (base === undefined) throw new GossipError('ERR_GOSSIP_BAD_CONFIG', `unknown profile ${String(profile)}`);
  const cfg: ProtocolConfig = { ...base, ...overrides };
  for (const [k, v] of Object.entries(cfg)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new GossipError('ERR_GOSSIP_BAD_CONFIG', `${k} must be a finite number ≥ 0`);
    }
  }
  if (cfg.probeInterval <= 0 || cfg.gossipInterval <= 0) {
    throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'probeInterval and gossipInterval must be > 0');
  }
  if (cfg.probeTimeout >= cfg.probeInterval) {
    throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'probeTimeout must be smaller than probeInterval');
  }
  if (cfg.awarenessMaxMultiplier < 1 || cfg.retransmitMult < 1 || cfg.suspicionMult < 1) {
    throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'multipliers must be ≥ 1');
  }
  if (cfg.suspicionMaxTimeoutMult < 1) {
    throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'suspicionMaxTimeoutMult must be ≥ 1');
  }
  return cfg;
}

/** Merges caps with overrides and validates. @throws GossipError ERR_GOSSIP_BAD_CONFIG */
export function resolveLimits(overrides: Partial<GossipLimits> = {}): GossipLimits {
  const l: GossipLimits = { ...DEFAULT_LIMITS, ...overrides };
  for (const [k, v] of Object.entries(l)) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new GossipError('ERR_GOSSIP_BAD_CONFIG', `${k} must be a positive integer`);
    }
  }
  if (l.maxPacketSize < 256 || l.maxPacketSize > 65_000) {
    throw new GossipError('ERR_GOSSIP_BAD_CONFIG', 'maxPacketSize must be within 256..65000');
  }
  return l;
}

/** memberlist's pushPullScale: the interval grows with log2(n) above 32 members so total load stays flat. */
export function pushPullScale(intervalMs: number, n: number): number {
  const threshold = 32;
  if (n <= threshold) return intervalMs;
  const mult = Math.ceil(Math.log2(n) - Math.log2(threshold)) + 1;
  return intervalMs * mult;
}

/** Retransmit limit: retransmitMult · ceil(log10(n + 1)). */
export function retransmitLimit(retransmitMult: number, n: number): number {
  return retransmitMult * Math.ceil(Math.log10(n + 1));
}
