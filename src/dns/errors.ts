// Domain errors of the DNS server: one class, stable ERR_DNS_* codes that never change meaning.

/** Stable error codes thrown or rejected by the DNS public API. */
export type DnsErrorCode =
  /** An option is out of range or of the wrong shape (domain, ttl, timeouts, caps). */
  | 'ERR_DNS_BAD_CONFIG'
  /** An address (bind address, forwarder, resolv.conf nameserver) is not a usable IP literal / "ip:port". */
  | 'ERR_DNS_BAD_ADDRESS'
  /** The UDP or TCP socket could not be bound; `cause` holds the socket error (EADDRINUSE, EACCES…). */
  | 'ERR_DNS_BIND_FAILED'
  /** `start()` was called on a server that is already started, or after `close()`. */
  | 'ERR_DNS_BAD_STATE';

/** Error raised by the DNS layer. `code` is stable; `message` is for humans. */
export class DnsError extends Error {
  readonly code: DnsErrorCode;

  constructor(code: DnsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DnsError';
    this.code = code;
  }
}
