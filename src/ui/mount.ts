/** Starts the live view for the daemon: checks the address (a non-loopback one needs `--ui-allow-remote`), mounts
 * the API handler read-only with no auth (IFACE15.md) behind the UI server, and listens. */
import type { Logger } from 'pino';
import { AppswitchError } from '../errors.js';
import { createApiHandler, type ApiSources } from '../api/handler.js';
import { isLoopbackHost } from '../net-listen.js';
import { UiServer } from './server.js';

export interface LiveViewOptions {
  address: { host: string; port: number };
  /** `--ui-allow-remote`: a non-loopback address was asked for knowingly. */
  allowRemote: boolean;
  sources: ApiSources;
  log: Logger;
  onInternalError?: (what: string, e: unknown) => void;
  onError?: (e: NodeJS.ErrnoException) => void;
}

export interface LiveView {
  /** "host:port" as bound. */
  address: string;
  close(): Promise<void>;
}

/** Throws ERR_CONFIG for a non-loopback address without `--ui-allow-remote` (the daemon checks this before it starts
 * anything else, and again here). */
export function checkUiAddress(address: { host: string; port: number }, allowRemote: boolean): void {
  const { host, port } = address;
  if (!allowRemote && !isLoopbackHost(host)) {
    throw new AppswitchError(
      'ERR_CONFIG',
      `--ui-address ${shown(host, port)} is not a loopback address: the live view has no authentication and shows every app, its command line and tags to whoever reaches it. Use 127.0.0.1 and an SSH tunnel (docs/live-view.md), or add --ui-allow-remote`,
    );
  }
}

const shown = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/** Listens; throws ERR_CONFIG for a non-loopback address without allowRemote, or when the address cannot be bound. */
export async function startLiveView(o: LiveViewOptions): Promise<LiveView> {
  const { host, port } = o.address;
  checkUiAddress(o.address, o.allowRemote);
  const api = createApiHandler(o.sources, { readOnly: true, auth: 'none', ...(o.onInternalError ? { onInternalError: o.onInternalError } : {}) });
  const server = new UiServer((req, res) => api(req, res), o.log);
  if (o.onInternalError) server.onInternalError = o.onInternalError;
  if (o.onError) server.onError = o.onError;
  let address: string;
  try {
    address = await server.listen(host, port);
  } catch (e) {
    throw new AppswitchError('ERR_CONFIG', `--ui-address ${shown(host, port)}: ${(e as Error).message}`);
  }
  if (!isLoopbackHost(host)) {
    o.log.warn({ uiAddress: address }, 'the live view listens on a non-loopback address (--ui-allow-remote): anyone who reaches it sees the apps, their command lines and tags, the services and the members');
  }
  o.log.info({ uiAddress: address, url: `http://${address}/` }, 'live view listening');
  return { address, close: () => server.close() };
}
