/** The control API server (see control-protocol.ts). Bad requests get an error response, never a crash. */
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import type { ControlRequest, ControlResponse } from './control-protocol.js';

export type ControlHandler = (req: ControlRequest) => unknown;

const MAX_LINE = 64 * 1024;

export class ControlServer {
  private server?: net.Server;

  constructor(
    private readonly handle: ControlHandler,
    private readonly log: Logger,
  ) {}

  listen(path: string): Promise<void> {
    try {
      unlinkSync(path);
    } catch {
      /* not there */
    }
    const server = net.createServer((sock) => this.serve(sock));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        chmodSync(path, 0o660);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
    });
  }

  private serve(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        sock.end(JSON.stringify({ id: 0, error: { code: 'ERR_BAD_REQUEST', message: 'request too long' } }) + '\n');
        return;
      }
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) sock.write(JSON.stringify(this.answer(line)) + '\n');
      }
    });
  }

  private answer(line: string): ControlResponse {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      return { id: 0, error: { code: 'ERR_BAD_REQUEST', message: 'request is not JSON' } };
    }
    if (typeof req !== 'object' || req === null || typeof (req as ControlRequest).method !== 'string') {
      return { id: 0, error: { code: 'ERR_BAD_REQUEST', message: 'request needs a method' } };
    }
    const r = req as ControlRequest;
    const id = typeof r.id === 'number' ? r.id : 0;
    try {
      const result = this.handle(r);
      if (result === undefined) return { id, error: { code: 'ERR_UNKNOWN_METHOD', message: `unknown method ${String(r.method)}` } };
      return { id, result };
    } catch (e) {
      this.log.error({ err: e, method: r.method }, 'control request failed');
      return { id, error: { code: 'ERR_INTERNAL', message: (e as Error).message } };
    }
  }
}
