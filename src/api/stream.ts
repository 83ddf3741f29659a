/** GET /v1/events: one subscription per request, written as server-sent events (`id: SEQ`, `event: TYPE`,
 * `data: JSON`, blank line) or as NDJSON (one event per line). The stream never ends by itself: a keep-alive every
 * 15 s (SSE `: ping`, NDJSON an empty line) lets both sides notice a dead peer. Bounded: the subscription's queue
 * is (maxBuffered, oldest dropped, then an events.lost), and while the client does not read, the stream stops
 * taking events from it (at most one batch waits in our output); when the client goes, the subscription is closed. */
import type { ServerResponse } from 'node:http';
import type { AppswitchEvent, EventSource, SubscribeOptions } from '../events/types.js';

export const KEEPALIVE_MS = 15_000;
/** Events a subscriber's queue holds before the oldest are dropped. */
export const MAX_BUFFERED = 1000;

export type StreamFormat = 'sse' | 'ndjson';

export const CONTENT_TYPES: Readonly<Record<StreamFormat, string>> = {
  sse: 'text/event-stream; charset=utf-8',
  ndjson: 'application/x-ndjson',
};

/** One event as the format writes it. */
export function encodeEvent(e: AppswitchEvent, format: StreamFormat): string {
  const json = JSON.stringify(e);
  return format === 'sse' ? `id: ${e.seq}\nevent: ${e.type}\ndata: ${json}\n\n` : `${json}\n`;
}

const KEEPALIVE: Readonly<Record<StreamFormat, string>> = { sse: ': ping\n\n', ndjson: '\n' };

/** What the stream tells its owner (for the log and the count of open streams). */
export interface StreamHooks {
  opened?: () => void;
  closed?: (why: string) => void;
}

/** Streams `source`'s events to `res` until the client goes (or the source fails); returns when it has ended. */
export async function streamEvents(
  res: ServerResponse,
  source: EventSource,
  req: { format: StreamFormat; app?: string; types?: SubscribeOptions['types'] },
  hooks: StreamHooks = {},
): Promise<void> {
  const opts: SubscribeOptions = { maxBuffered: MAX_BUFFERED };
  if (req.app !== undefined) opts.app = req.app;
  if (req.types !== undefined) opts.types = req.types;
  const sub = source.subscribe(opts);
  let ended = false;
  let why = 'the client went away';
  let wakeDrain: (() => void) | undefined;
  const end = (): void => {
    if (ended) return;
    ended = true;
    clearInterval(ping);
    sub.close(); /* a pending next() rejects: the loop below ends */
    wakeDrain?.();
  };
  res.on('close', end);
  res.on('error', end);
  res.writeHead(200, {
    'Content-Type': CONTENT_TYPES[req.format],
    'Cache-Control': 'no-store',
    'X-Accel-Buffering': 'no',
  });
  res.flushHeaders();
  /* a keep-alive only when nothing waits in our output: a client that does not read gets no more than it had */
  const ping = setInterval(() => {
    if (!ended && !res.writableNeedDrain) res.write(KEEPALIVE[req.format]);
  }, KEEPALIVE_MS);
  ping.unref();
  if (req.format === 'sse') res.write(': appswitch events\n\n'); /* EventSource clients see the stream open */
  hooks.opened?.();
  try {
    while (!ended) {
      let batch: AppswitchEvent[];
      try {
        batch = await sub.next();
      } catch {
        if (!ended) why = 'the event source closed the subscription';
        break;
      }
      if (ended) break;
      const text = batch.map((e) => encodeEvent(e, req.format)).join('');
      if (!res.write(text) && !ended) {
        await new Promise<void>((resolve) => {
          wakeDrain = resolve;
          res.once('drain', resolve);
        });
        wakeDrain = undefined;
      }
    }
  } finally {
    const byUs = !ended;
    end();
    if (byUs && !res.writableEnded) res.end();
    hooks.closed?.(why);
  }
}
