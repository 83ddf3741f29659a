/** The bearer token of the TCP API listener (`--api-address`): read from `--api-token-file FILE`, else from
 * STATE-DIR/api.token, generated there on the first start (32 random bytes in hex, mode 0600, created atomically
 * so that an existing token is never replaced). Requests carry it as `Authorization: Bearer TOKEN`; it is compared
 * in constant time. The token is never logged; the file is. */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { AppswitchError } from '../errors.js';
import { createFileExclusive } from '../exclusive-file.js';

export const TOKEN_FILE_NAME = 'api.token';
/** Shortest token accepted from a file (characters): 128 bits of hex. */
export const MIN_TOKEN_CHARS = 32;
const TOKEN_BYTES = 32;

export interface ApiToken {
  token: string;
  file: string;
  source: 'flag' | 'state-dir' | 'generated';
  /** The file's mode when others than its owner may read it ("0644"); the daemon warns. */
  looseMode?: string;
}

/** The token in a file's text: its first line that is not blank or a `#` comment, trimmed. */
export function parseTokenText(text: string, file: string): string {
  const line = text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l !== '' && !l.startsWith('#'));
  if (line === undefined) throw new AppswitchError('ERR_CONFIG', `--api-token-file ${file}: no token in the file`);
  if (!/^[\x21-\x7e]+$/.test(line)) throw new AppswitchError('ERR_CONFIG', `--api-token-file ${file}: the token must be printable ASCII without spaces`);
  if (line.length < MIN_TOKEN_CHARS) {
    throw new AppswitchError('ERR_CONFIG', `--api-token-file ${file}: the token is shorter than ${MIN_TOKEN_CHARS} characters (make one: openssl rand -hex 32)`);
  }
  return line;
}

/** Writes a new token to `file` (0600) unless it exists: false when it does. */
function createTokenFile(file: string): boolean {
  return createFileExclusive(file, `${randomBytes(TOKEN_BYTES).toString('hex')}\n`);
}

/** The token the TCP listener checks: `tokenFile` (the flag), else STATE-DIR/api.token, made when missing. */
export function resolveApiToken(cfg: { apiTokenFile?: string; stateDir: string }): ApiToken {
  let file = cfg.apiTokenFile;
  let source: ApiToken['source'] = 'flag';
  if (file === undefined) {
    file = path.join(cfg.stateDir, TOKEN_FILE_NAME);
    source = createTokenFile(file) ? 'generated' : 'state-dir';
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `--api-token-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out: ApiToken = { token: parseTokenText(text, file), file, source };
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) out.looseMode = mode.toString(8).padStart(4, '0');
  return out;
}

/** Whether an Authorization header carries `token` as a bearer token. Constant time in the header's content:
 * both sides are hashed first, so neither the token's length nor a common prefix shows in the time taken. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  const given = createHash('sha256').update(m?.[1] ?? '').digest();
  const want = createHash('sha256').update(token).digest();
  return timingSafeEqual(given, want) && m !== null;
}
