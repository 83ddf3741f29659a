/** The ingress commands: `appswitch expose VIP:PORT [--port HOSTPORT]`, `appswitch unexpose VIP:PORT` and
 * `appswitch get exposures` (VIP:PORT HOSTPORT SOURCE GATEWAYS STATE); `--json` for scripts (stable keys,
 * EXPOSURE_JSON_KEYS). */
import type { Command } from 'commander';
import type { ExposeResult, ExposureView } from '../daemon/control-protocol.js';
import { AppswitchError } from '../errors.js';
import { exposureName, parseVipPort } from '../gateway/exposures.js';
import { request, resolveSocket } from './client.js';
import { fixedKeys, table } from './format.js';

/** The keys of each `get exposures --json` row, in order (adding one is allowed; removing or renaming one is not). */
export const EXPOSURE_JSON_KEYS = ['vip', 'port', 'hostPort', 'source', 'gateways', 'state', 'detail'] as const;

interface Opts {
  json?: boolean;
  socket?: string;
  port?: string;
}

function fail(e: unknown): never {
  process.stderr.write(`appswitch: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(125);
}

function vipPort(s: string): { vip: string; port: number } {
  try {
    return parseVipPort(s);
  } catch (e) {
    throw new AppswitchError('ERR_BAD_ARGUMENT', (e as Error).message);
  }
}

function width(): number {
  return process.stdout.isTTY && process.stdout.columns ? process.stdout.columns : 80;
}

function rows(list: ExposureView[]): string {
  return table(
    ['VIP:PORT', 'HOSTPORT', 'SOURCE', 'GATEWAYS', 'STATE'],
    list.map((e) => [exposureName(e.vip, e.port), String(e.hostPort), e.source, e.gateways.join(',') || '-', e.detail ? `${e.state} (${e.detail})` : e.state]),
    { width: width(), elastic: [4, 3] },
  );
}

function report(r: ExposeResult, json: boolean, what: string): void {
  if (json) process.stdout.write(JSON.stringify(r.exposure ? { ...r, exposure: fixedKeys(r.exposure, EXPOSURE_JSON_KEYS) } : r, null, 2) + '\n');
  else process.stdout.write(`${what}\n`);
  if (r.warning) process.stderr.write(`appswitch: warning: ${r.warning}\n`);
}

/** Adds expose, unexpose and `get exposures` to the program (after addOpsCommands, which makes `get`). */
export function addIngressCommands(program: Command): void {
  program
    .command('expose')
    .description('make a service reachable from outside at HOSTPORT (default: its port) of every gateway node')
    .argument('<vip:port>', 'the service')
    .option('--port <hostport>', 'host port on the gateways (default: the service port)')
    .option('--json', 'machine-readable output')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action(async (target: string, o: Opts) => {
      try {
        const { vip, port } = vipPort(target);
        const params: Record<string, unknown> = { vip, port };
        if (o.port !== undefined) {
          if (!/^\d{1,5}$/.test(o.port) || Number(o.port) < 1 || Number(o.port) > 65535) throw new AppswitchError('ERR_BAD_ARGUMENT', `--port ${o.port}: expected a port 1-65535`);
          params.hostPort = Number(o.port);
        }
        const r = await request<ExposeResult>(resolveSocket(o.socket), 'expose', params);
        const at = r.exposure ? `host port ${r.exposure.hostPort}` : 'its host port';
        const gws = r.exposure?.gateways.length ? ` on ${r.exposure.gateways.join(', ')}` : '';
        report(r, !!o.json, `exposed ${exposureName(vip, port)} at ${at}${gws}`);
      } catch (e) {
        fail(e);
      }
    });

  program
    .command('unexpose')
    .description('stop exposing a service exposed with appswitch expose')
    .argument('<vip:port>', 'the service')
    .option('--json', 'machine-readable output')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action(async (target: string, o: Opts) => {
      try {
        const { vip, port } = vipPort(target);
        const r = await request<ExposeResult>(resolveSocket(o.socket), 'unexpose', { vip, port });
        report(r, !!o.json, `unexposed ${exposureName(vip, port)}`);
      } catch (e) {
        fail(e);
      }
    });

  const get = program.commands.find((c) => c.name() === 'get');
  if (!get) return;
  get
    .command('exposures')
    .description('services reachable from outside: host port, source (app: run --expose; api: appswitch expose), gateways, state')
    .option('--json', 'machine-readable output (stable keys, see docs/ingress.md)')
    .option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)')
    .action(async (o: Opts) => {
      const list = await request<ExposureView[]>(resolveSocket(o.socket), 'exposures').catch(fail);
      process.stdout.write((o.json ? JSON.stringify(list.map((e) => fixedKeys(e, EXPOSURE_JSON_KEYS)), null, 2) : rows(list)) + '\n');
    });
}
