/** `appswitch events [--json] [--app NAME] [--type T]...`: follows the daemon's event stream (docs/events.md), one
 * line per event — text for people, or the event's JSON (one object per line) with --json. */
import type { Command } from 'commander';
import { isEventType } from '../events/bus.js';
import { EVENT_TYPES } from '../events/types.js';
import type { AppRef, AppswitchEvent, EventType, ServiceRef } from '../events/types.js';
import { AppswitchError } from '../errors.js';
import { resolveSocket, streamEvents } from './client.js';

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** "12:00:01.234" in local time. */
function clock(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function who(c: AppRef | undefined): string {
  if (!c) return '?';
  return c.name ? `${c.name} (${c.identity})` : c.identity;
}

function what(s: ServiceRef | undefined): string {
  if (!s) return '?';
  const at = s.vip.includes(':') ? `[${s.vip}]:${s.port}` : `${s.vip}:${s.port}`;
  return s.name ? `${s.name} ${at}` : at;
}

/** One event as a text line: `12:00:01.234 connect.denied  client web (10.0.0.7) -> api.shop 10.0.0.5:8080  policy`.
 * Control characters in names and details are shown as spaces. */
export function eventLine(e: AppswitchEvent): string {
  let body: string;
  switch (e.type) {
    case 'connect.allowed':
      body = `client ${who(e.client)} -> ${what(e.service)}  ${e.path ?? ''} ${e.endpoint ?? ''}`.trimEnd();
      break;
    case 'connect.refused':
    case 'connect.denied':
      body = `client ${who(e.client)} -> ${what(e.service)}  ${e.detail ?? ''}`.trimEnd();
      break;
    case 'app.started':
    case 'app.ended':
      body = `app ${who(e.client)} id ${e.client?.app ?? '?'} on ${e.client?.node ?? '?'}`;
      break;
    case 'service.up':
    case 'service.down':
    case 'exposure.changed':
      body = `service ${what(e.service)}  ${e.detail ?? ''}`.trimEnd();
      break;
    case 'member.state':
      body = `member ${e.member?.name ?? '?'} ${e.member?.address ?? ''} ${e.member?.state ?? ''}  ${e.detail ?? ''}`.trimEnd();
      break;
    case 'accept.unidentified':
      body = `peer ${e.peer ?? '?'} -> ${what(e.service)}  ${e.detail ?? ''}`.trimEnd();
      break;
    case 'events.lost':
      body = `${e.lost ?? 0} event(s) lost: this reader was too slow`;
      break;
    default:
      body = e.detail ?? '';
  }
  return `${clock(e.time)} ${String(e.type).padEnd(15)} ${body}`.replace(/[\u0000-\u001f\u007f]+/g, ' ');
}

/** --type values (repeatable, or comma-separated) as event types; an unknown one is an error naming the valid ones. */
export function parseTypes(list: string[]): EventType[] {
  const out: EventType[] = [];
  for (const t of list.flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean)) {
    if (!isEventType(t)) throw new AppswitchError('ERR_BAD_ARGUMENT', `--type ${t}: not an event type (${EVENT_TYPES.join(', ')})`);
    out.push(t);
  }
  return out;
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

export function addEventsCommand(program: Command): void {
  program
    .command('events')
    .description("follow the daemon's events: connects allowed, refused and denied, apps, services, members, exposures")
    .option('--json', 'one JSON object per event and line (fields: docs/events.md)')
    .option('--app <name>', 'only events whose client or service is this app (name, app id or vip)')
    .option('--type <type>', 'only events of this type (repeatable or comma-separated)', collect, [])
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action(async (o: { json?: boolean; app?: string; type: string[]; socket?: string }) => {
      try {
        const types = parseTypes(o.type);
        const query: { app?: string; types?: EventType[] } = {};
        if (o.app !== undefined) query.app = o.app;
        if (types.length) query.types = types;
        await streamEvents(resolveSocket(o.socket), query, (e) => process.stdout.write((o.json ? JSON.stringify(e) : eventLine(e)) + '\n'));
        process.stderr.write('appswitch: the daemon ended the event stream\n');
        process.exit(125);
      } catch (e) {
        process.stderr.write(`appswitch: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exit(125);
      }
    });
}
