// Counters of the gossip layer: traffic per message type, drops per reason, caps hit.

import { MESSAGE_KINDS, type MemberState, type MessageKind } from './codec.js';
import { DROP_REASONS, type DropReason } from './envelope.js';

/** Why something was refused by a cap (see docs/gossip.md, "Caps"). */
export type CapReason = 'members' | 'keys' | 'values' | 'stores' | 'broadcasts' | 'relays' | 'streams';
const CAP_REASONS: readonly CapReason[] = ['members', 'keys', 'values', 'stores', 'broadcasts', 'relays', 'streams'];

/** Snapshot returned by `Memberlist.stats()`. All counters are cumulative since start. */
export interface GossipStats {
  packets: { sent: number; received: number; bytesSent: number; bytesReceived: number };
  streams: { sent: number; received: number; failed: number; bytesSent: number; bytesReceived: number };
  /** Per message type: count and encoded bytes (before compression/encryption). */
  messages: {
    sent: Record<MessageKind, number>;
    received: Record<MessageKind, number>;
    bytesSent: Record<MessageKind, number>;
    bytesReceived: Record<MessageKind, number>;
  };
  /** Packets or frames dropped, per reason. */
  dropped: Record<DropReason, number>;
  /** Records skipped because their type is unknown to this version. */
  unknownMessages: number;
  /** Updates refused by a cap, per cap. */
  capped: Record<CapReason, number>;
  members: Record<MemberState, number>;
  broadcastQueue: number;
  /** Lifeguard local health score (0 = healthy). */
  health: number;
  store: { nodes: number; liveKeys: number; tombstones: number };
  /** Suspicions raised by this node, refutations it made, members it declared dead. */
  protocol: {
    probes: number;
    probeFailures: number;
    suspicionsRaised: number;
    refutations: number;
    declaredDead: number;
    /** Push-pulls triggered by a membership-digest mismatch. */
    digestSyncs: number;
  };
}

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  const o = {} as Record<K, number>;
  for (const k of keys) o[k] = 0;
  return o;
}

/** Mutable counters (internal). */
export class Counters {
  readonly packets = { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 };
  readonly streams = { sent: 0, received: 0, failed: 0, bytesSent: 0, bytesReceived: 0 };
  readonly msgSent = zeros(MESSAGE_KINDS);
  readonly msgReceived = zeros(MESSAGE_KINDS);
  readonly msgBytesSent = zeros(MESSAGE_KINDS);
  readonly msgBytesReceived = zeros(MESSAGE_KINDS);
  readonly dropped = zeros(DROP_REASONS);
  readonly capped = zeros(CAP_REASONS);
  unknownMessages = 0;
  readonly protocol = { probes: 0, probeFailures: 0, suspicionsRaised: 0, refutations: 0, declaredDead: 0, digestSyncs: 0 };
}
