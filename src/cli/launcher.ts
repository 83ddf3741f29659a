/** Which launcher `appswitch run` execs: the installation's own (native/binding.ts launcherPath(): the one beside
 * this CLI, or APPSWITCH_LAUNCHER), the only one its daemon admits. Root runs it as it is; an ordinary user needs it
 * setuid root and executable for them (scripts/install.sh installs it root:appswitch 4750), and is told what to do
 * when it is not (native/caller.h has the launcher's own checks). */
import { accessSync, constants, statSync } from 'node:fs';
import { AppswitchError } from '../errors.js';
import { launcherPath } from '../native/binding.js';

const HOW = 'install appswitch with `sudo scripts/install.sh` (it installs the launcher setuid root, mode 4750, group appswitch), and be in the appswitch group (`sudo usermod -aG appswitch $USER`, then log in again); or run appswitch run as root';

/** The launcher to exec for a caller with this real uid; throws ERR_PERMISSION with what to do when an ordinary
 * user cannot use it. */
export function runnableLauncher(uid: number | undefined = process.getuid?.()): string {
  if (uid === 0 || uid === undefined) return launcherPath();
  let launcher: string;
  try {
    launcher = launcherPath();
  } catch (e) {
    throw new AppswitchError('ERR_PERMISSION', `appswitch run as an ordinary user (uid ${uid}) needs the installed setuid launcher: ${(e as Error).message}\n${HOW}`);
  }
  const st = statSync(launcher);
  if (st.uid !== 0 || (st.mode & 0o4000) === 0) {
    throw new AppswitchError('ERR_PERMISSION', `appswitch run as an ordinary user (uid ${uid}) needs the installed setuid launcher, and ${launcher} is not setuid root: ${HOW}`);
  }
  try {
    accessSync(launcher, constants.X_OK);
  } catch {
    throw new AppswitchError('ERR_PERMISSION', `${launcher} may be run only by root and members of its group (gid ${st.gid}), and uid ${uid} is not one: ${HOW}`);
  }
  return launcher;
}
