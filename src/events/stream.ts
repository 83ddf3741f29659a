/** Writes a subscription's events to a byte stream as newline-delimited JSON (the control socket's `events` method;
 * the HTTP API's /v1/events has its own framing). Bounded: while the stream does not take more (its buffer is full:
 * a slow or stalled reader) nothing is pulled, so events wait in the subscription's ring, which drops the oldest and
 * reports them as events.lost; the stream's own buffer holds at most one batch beyond its high-water mark. An empty
 * line every `keepAliveMs` finds a reader that vanished. The subscription is closed when the stream closes. */
import type { Writable } from 'node:stream';
import type { Subscription } from './types.js';

export const KEEPALIVE_MS = 15_000;

export function pipeEvents(sub: Subscription, out: Writable, keepAliveMs = KEEPALIVE_MS): void {
  let closed = false;
  const stop = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(ka);
    sub.close();
  };
  const ka = setInterval(() => {
    if (!out.writableNeedDrain) out.write('\n');
  }, keepAliveMs);
  ka.unref();
  out.once('close', stop);
  out.once('error', stop);
  out.once('finish', stop);
  const loop = async (): Promise<void> => {
    while (!closed) {
      let batch;
      try {
        batch = await sub.next();
      } catch {
        break; /* closed */
      }
      if (closed || out.destroyed) break;
      let text = '';
      for (const e of batch) text += JSON.stringify(e) + '\n';
      if (!out.write(text)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            out.off('drain', done);
            out.off('close', done);
            resolve();
          };
          out.on('drain', done);
          out.on('close', done);
        });
      }
    }
    stop();
  };
  void loop();
}
