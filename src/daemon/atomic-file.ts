/** Writing a file so that a reader (or a crash) sees the old contents or the new, never a mix: a temporary file
 * beside it, written and fsync'd, then renamed over it (rename(2) is atomic within a directory). */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';

/** Replaces `file` with `text` atomically, the new file with `mode`. Throws what the system calls throw. */
export function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
