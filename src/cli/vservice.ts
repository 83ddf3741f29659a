/** `appswitch create vservice`, `appswitch delete vservice`, `appswitch get vservices`: virtual services for servers
 * outside appswitch (docs/vservices.md). The daemon checks every field (control call createVservice); the CLI only
 * gathers them. Errors exit 125 with the daemon's ERR_* code and message. */
import type { Command } from 'commander';
import type { VserviceView } from '../daemon/control-protocol.js';
import { request, resolveSocket } from './client.js';
import { fixedKeys, table, tagsText } from './format.js';

/** The keys of each `--json` row of `get vservices` (and of the object `create vservice --json` prints, which adds
 * `replaced`). Adding a key is allowed; removing or renaming one is not. */
export const VSERVICE_JSON_KEYS = ['name', 'ip', 'port', 'proto', 'backends', 'lb', 'tags', 'origin', 'version'] as const;

interface Opts {
  json?: boolean;
  socket?: string;
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function fail(e: unknown): never {
  process.stderr.write(`appswitch: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(125);
}

function print(text: string): void {
  process.stdout.write(text + '\n');
}

/** The subcommand group `name` of the program (get, create, delete), made when missing. */
function group(program: Command, name: string, description: string): Command {
  return program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);
}

function common(c: Command): Command {
  return c.option('--json', 'machine-readable output (stable keys, see docs/vservices.md)').option('--socket <path>', 'daemon control socket (or APPSWITCH_SOCKET)');
}

function vipPort(v: { ip: string; port: number }): string {
  return v.ip.includes(':') ? `[${v.ip}]:${v.port}` : `${v.ip}:${v.port}`;
}

/** Adds create vservice, delete vservice and get vservices. */
export function addVserviceCommands(program: Command): void {
  const create = group(program, 'create', 'create a cluster object (vservice)');
  common(create.command('vservice').argument('<name>', 'the DNS name of the virtual service'))
    .description('a vip (and DNS name) in front of servers outside appswitch; replaces a virtual service of that name')
    .requiredOption('--ip <vip>', 'the virtual address, inside --vip-cidr')
    .requiredOption('--port <port>', 'the virtual port (1-65535)')
    .requiredOption('--backend <addr:port>', 'a backend server (repeatable, 1-64; IPv6 as [addr]:port)', collect)
    .option('--lb <strategy>', "random, round-robin, least-conn or p2c (default: the daemon's --lb)")
    .option('--tag <k=v>', 'a tag the policy judges clients against (repeatable)', collect)
    .action(async (name: string, o: Opts & { ip: string; port: string; backend: string[]; lb?: string; tag?: string[] }) => {
      const port = /^\d{1,5}$/.test(o.port) ? Number(o.port) : NaN;
      if (Number.isNaN(port)) fail(new Error(`--port ${o.port} is not a port number`));
      const params: Record<string, unknown> = { name, ip: o.ip, port, backends: o.backend };
      if (o.lb !== undefined) params.lb = o.lb;
      if (o.tag !== undefined) params.tags = o.tag;
      const v = await request<VserviceView & { replaced: boolean }>(resolveSocket(o.socket), 'createVservice', params).catch(fail);
      if (o.json) print(JSON.stringify({ ...fixedKeys(v, VSERVICE_JSON_KEYS), replaced: v.replaced }, null, 2));
      else print(`vservice ${v.name} ${v.replaced ? 'replaced' : 'created'}: ${vipPort(v)} -> ${v.backends.join(', ')}`);
    });

  const del = group(program, 'delete', 'delete a cluster object (vservice)');
  common(del.command('vservice').argument('<name>', 'the virtual service'))
    .description('delete a virtual service (on every node)')
    .action(async (name: string, o: Opts) => {
      const r = await request<{ name: string; deleted: true }>(resolveSocket(o.socket), 'deleteVservice', { name }).catch(fail);
      print(o.json ? JSON.stringify(r, null, 2) : `vservice ${r.name} deleted`);
    });

  const get = group(program, 'get', 'show apps, services, members or connections (--json for scripts)');
  common(get.command('vservices'))
    .description('virtual services (cluster-wide)')
    .action(async (o: Opts) => {
      const vs = await request<VserviceView[]>(resolveSocket(o.socket), 'vservices').catch(fail);
      if (o.json) {
        print(JSON.stringify(vs.map((v) => fixedKeys(v, VSERVICE_JSON_KEYS)), null, 2));
        return;
      }
      const width = process.stdout.isTTY && process.stdout.columns ? process.stdout.columns : 80;
      print(table(['NAME', 'VIP:PORT', 'BACKENDS', 'LB', 'TAGS'], vs.map((v) => [v.name, vipPort(v), v.backends.join(','), v.lb ?? '-', tagsText(v.tags)]), { width, elastic: [2, 4] }));
    });
}
