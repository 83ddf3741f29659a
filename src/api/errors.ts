/** Errors of the HTTP control API: a stable ERR_* code (the control protocol's, plus the few HTTP adds) and the HTTP
 * status it is answered with. The body of every error is `{"error": {"code": "ERR_...", "message": "..."}}`. */
import type { ControlErrorCode } from '../daemon/control-protocol.js';

/** The control protocol's codes (control-protocol.ts) and HTTP's own:
 * - ERR_UNAUTHORIZED (401): the TCP listener's request has no `Authorization: Bearer TOKEN`, or the wrong token.
 * - ERR_METHOD_NOT_ALLOWED (405): the path exists, not with this method (the `Allow` header lists the methods). */
export type ApiErrorCode = ControlErrorCode | 'ERR_UNAUTHORIZED' | 'ERR_METHOD_NOT_ALLOWED';

/** The HTTP status of each code. ERR_UNKNOWN_METHOD (a method the daemon does not serve) is a 404, as a path that
 * no route matches. */
export const STATUS_OF: Readonly<Record<ApiErrorCode, number>> = {
  ERR_BAD_JSON: 400,
  ERR_BAD_REQUEST: 400,
  ERR_BAD_PARAMS: 400,
  ERR_UNAUTHORIZED: 401,
  ERR_PERMISSION: 403,
  ERR_NOT_FOUND: 404,
  ERR_UNKNOWN_METHOD: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_CONFLICT: 409,
  ERR_TOO_LARGE: 413,
  ERR_INTERNAL: 500,
};

/** A refusal with its code, status and (for 401 and 405) the header HTTP asks for. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.status = STATUS_OF[code];
  }
}

/** The JSON body of an error answer. */
export function errorBody(code: ApiErrorCode, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/** A complete HTTP/1.1 error answer that closes the connection, for the places that have only a socket (a request
 * that could not be parsed, a refused peer). */
export function rawErrorResponse(status: number, reason: string, code: ApiErrorCode, message: string): string {
  const body = errorBody(code, message) + '\n';
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n${body}`
  );
}
