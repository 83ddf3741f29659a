// Domain errors of the gossip layer: one class, stable ERR_GOSSIP_* codes that never change meaning.

/** Stable error codes thrown or rejected by the gossip public API. */
export type GossipErrorCode =
  | 'ERR_GOSSIP_BAD_CONFIG'
  | 'ERR_GOSSIP_BAD_ADDRESS'
  | 'ERR_GOSSIP_BAD_KEY'
  | 'ERR_GOSSIP_KEY_INVALID'
  | 'ERR_GOSSIP_VALUE_TOO_LARGE'
  | 'ERR_GOSSIP_TOO_MANY_KEYS'
  | 'ERR_GOSSIP_JOIN_FAILED'
  | 'ERR_GOSSIP_SHUTDOWN'
  | 'ERR_GOSSIP_TIMEOUT'
  | 'ERR_GOSSIP_UNREACHABLE'
  | 'ERR_GOSSIP_FRAME_TOO_LARGE'
  | 'ERR_GOSSIP_TRANSPORT_CLOSED';

/** Error raised by the gossip layer. `code` is stable; `message` is for humans. */
export class GossipError extends Error {
  readonly code: GossipErrorCode;

  constructor(code: GossipErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GossipError';
    this.code = code;
  }
}
