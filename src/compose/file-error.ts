/** The one error an appswitch.yaml can raise: `FILE:LINE: message`, on one line (src/compose/file.ts re-exports it). */
import { AppswitchError } from '../errors.js';

/** Line breaks that would split the message; other control characters are escaped where user text is quoted. */
const BREAKS = /[\r\n\u2028\u2029\u0085]+/g;

/** A bad appswitch.yaml: code ERR_CONFIG, message exactly `FILE:LINE: message` (FILE as the user gave it, LINE
 * 1-based), one line. */
export class ComposeFileError extends AppswitchError {
  constructor(file: string, line: number, message: string) {
    super('ERR_CONFIG', `${file}:${line}: ${message.replace(BREAKS, ' ')}`);
    this.name = 'ComposeFileError';
  }
}

/** Quotes text from the file for a message: JSON-style escapes (no line break survives), at most 60 characters. */
export function q(s: string): string {
  const cut = s.length > 60 ? `${s.slice(0, 57)}...` : s;
  return JSON.stringify(cut).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
