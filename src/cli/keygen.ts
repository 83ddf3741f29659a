/** `appswitch keygen [FILE]`: a new cluster key for gossip and the peer API. Without FILE the key file's text goes
 * to stdout; with FILE it is created with mode 0600, atomically, and never over an existing file. */
import type { Command } from 'commander';
import { createKeyFile, newKeyText } from '../daemon/gossip-key.js';
import { AppswitchError } from '../errors.js';

/** Writes a new key to `file` (or stdout); throws ERR_BAD_ARGUMENT when the file exists or cannot be created. */
export function keygen(file: string | undefined, out: (s: string) => void): void {
  if (file === undefined) {
    out(newKeyText());
    return;
  }
  let made: boolean;
  try {
    made = createKeyFile(file);
  } catch (e) {
    throw new AppswitchError('ERR_BAD_ARGUMENT', `keygen ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!made) throw new AppswitchError('ERR_BAD_ARGUMENT', `keygen ${file}: the file exists (a key is never overwritten; remove it first to replace it)`);
  out(`wrote a new cluster key to ${file} (mode 0600): give a copy to every node (--gossip-key ${file}, or STATE-DIR/gossip.key)\n`);
}

export function addKeygenCommand(program: Command): void {
  program
    .command('keygen')
    .description('make a new cluster key (gossip and peer API): print it, or write FILE (mode 0600, never over an existing file)')
    .argument('[file]', 'where to write the key (default: stdout)')
    .action((file: string | undefined) => {
      try {
        keygen(file, (s) => process.stdout.write(s));
      } catch (e) {
        process.stderr.write(`appswitch: ${(e as Error).message}\n`);
        process.exit(125);
      }
    });
}
