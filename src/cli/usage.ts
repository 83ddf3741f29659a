/** How the command line reads and explains itself, for every subcommand: option help that states each default once
 * and unquoted, usage errors that exit 125 like every other failure of appswitch's own (so a wrapper can tell them
 * from a program's exit code 1), and `--socket` accepted before the subcommand as well as after it. */
import type { Command, CommanderError, Help, Option } from 'commander';

/** appswitch's own failures (as docker run): bad usage, daemon unreachable, refused request. */
export const EXIT_APPSWITCH = 125;

/** An option's help line: its description, then its choices and its default unless the description says it already
 * ("default: hostname-address"). Commander's own adds `(default: "40000-60000")` — quoted, a second time where the
 * text had it, and `[]` for every repeatable option. */
export function optionDescription(o: Option): string {
  const extra: string[] = [];
  if (o.argChoices) extra.push(`one of ${o.argChoices.join(', ')}`);
  const d: unknown = o.defaultValue;
  const takesValue = o.required || o.optional;
  const stated = /\bdefault\b/i.test(o.description);
  const empty = d === undefined || (Array.isArray(d) && d.length === 0);
  if (takesValue && !stated && !empty) extra.push(`default: ${o.defaultValueDescription ?? (Array.isArray(d) ? d.join(', ') : String(d))}`);
  return extra.length ? `${o.description} (${extra.join('; ')})` : o.description;
}

/** Applies the help format and the exit code to `program` (subcommands added afterwards inherit both). */
export function configureUsage(program: Command): void {
  program.configureHelp({ optionDescription: (o: Option): string => optionDescription(o) } satisfies Partial<Help>);
  program.exitOverride();
  program.option('--socket <path>', 'daemon control socket, for any subcommand that talks to the daemon (or APPSWITCH_SOCKET)');
  // `appswitch --socket S status` means `appswitch status --socket S`; a socket given after the subcommand wins
  program.hook('preAction', (root, action) => {
    const socket = root.getOptionValue('socket') as string | undefined;
    if (socket === undefined || action === root) return;
    if (!action.options.some((o) => o.long === '--socket')) {
      action.error(`error: --socket does not apply to 'appswitch ${action.name()}'`, { exitCode: EXIT_APPSWITCH, code: 'appswitch.socket' });
    }
    if (action.getOptionValue('socket') === undefined) action.setOptionValueWithSource('socket', socket, 'cli');
  });
}

/** The exit code for an error commander threw (exitOverride): 0 for --help and --version, else EXIT_APPSWITCH.
 * Commander has already printed its message. */
export function usageExitCode(e: CommanderError): number {
  return e.exitCode === 0 ? 0 : EXIT_APPSWITCH;
}
