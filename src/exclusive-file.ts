/** Creating a secret file without ever replacing one (the cluster key, the API token). */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, linkSync, openSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

/** Creates `file` holding `text`, mode 0600, atomically: written and synced to a temporary file in the same
 * directory, which is then hard-linked to `file` (link(2) fails with EEXIST rather than replace a file, so an existing
 * one is never overwritten and no reader ever sees a half-written one). Returns false when `file` exists. */
export function createFileExclusive(file: string, text: string): boolean {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600); /* libuv adds O_CLOEXEC */
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(tmp);
  }
}
