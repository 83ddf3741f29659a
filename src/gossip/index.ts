// Public API of the gossip layer (SWIM + Lifeguard membership with a replicated per-node key/value store).

export { Memberlist } from './memberlist.js';
export type { MemberInfo, MemberEvent, ChangeEvent, MemberlistEvents, MemberlistOptions, JoinOptions } from './memberlist.js';
export type { MemberState, MessageKind } from './codec.js';
export type { NameConflict } from './conflicts.js';
export { CONFLICT_MISSES } from './conflicts.js';
export { PROFILES, DEFAULT_LIMITS, resolveConfig, resolveLimits, pushPullScale, retransmitLimit } from './config.js';
export type { ProfileName, ProtocolConfig, GossipLimits } from './config.js';
export type { GossipStats, CapReason } from './stats.js';
export type { DropReason } from './envelope.js';
export { PROTOCOL_VERSION } from './envelope.js';
export { Keyring, KEY_BYTES } from './crypto.js';
export { GossipError } from './errors.js';
export type { GossipErrorCode } from './errors.js';
export type { GossipLogger } from './log.js';
export { RateLimitedWarn, silentLogger } from './log.js';
export type { Transport, PacketHandler, StreamHandler, StreamCallback, HostPort } from './transport.js';
export { MAX_PACKET_SIZE, DEFAULT_MAX_STREAM_BYTES, parseAddress, tryParseAddress, formatAddress } from './transport.js';
export { UdpTransport } from './udp-transport.js';
export type { UdpTransportOptions } from './udp-transport.js';
export { MemoryNetwork, MemoryTransport } from './memory-transport.js';
export type { MemoryNetworkOptions, MemoryNetworkStats, PacketTap } from './memory-transport.js';
export { VirtualClock, systemClock } from './clock.js';
export type { Clock, TimerHandle } from './clock.js';
export { seededRandom } from './random.js';
export type { RandomSource } from './random.js';
