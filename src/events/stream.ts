/** Writes a subscription's events to a byte stream as newline-delimited JSON (the control socket's `events` method;
 * the HTTP API's /v1/events has its own framing). Bounded: while the stream does not take more (its buffer is full:
 * a slow or stalled reader) nothing is pulled, so events wait in the subscription's ring, which drops the oldest and
 * reports them as events.lost; the stream's own buffer holds at most one batch beyond its high-water mark. An empty
 * line every `keepAliveMs` finds a reader that vanished. The subscription is closed when the stream closes. */
import type { Writable } from 'node:stream';
import { isEventType } from './bus.js';
import type { SubscribeOptions, Subscription } from './types.js';

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
        if (!closed) out.end(); /* the subscription was ended on the daemon's side (it stops): so is the stream */
        break;
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

/** The `events` request's parameters (already checked for their JSON types) as subscription options, or what is wrong
 * with them. */
export function subscribeOptions(p: { app?: unknown; types?: unknown; maxBuffered?: unknown }): SubscribeOptions | string {
  const o: SubscribeOptions = {};
  if (p.app !== undefined) {
    if (typeof p.app !== 'string' || p.app.length > 253) return '"app" must be a name of at most 253 characters';
    o.app = p.app;
  }
  if (p.types !== undefined) {
    if (!Array.isArray(p.types)) return '"types" must be a list of event types';
    const bad = (p.types as unknown[]).find((t) => !isEventType(t));
    if (bad !== undefined) return `unknown event type "${String(bad).slice(0, 64)}"`;
    o.types = p.types.filter(isEventType);
  }
  if (p.maxBuffered !== undefined) {
    if (typeof p.maxBuffered !== 'number' || !Number.isInteger(p.maxBuffered) || p.maxBuffered < 1) return '"maxBuffered" must be a positive integer';
    o.maxBuffered = p.maxBuffered;
  }
  return o;
}
