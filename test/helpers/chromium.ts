/** Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: requests on fd 3,
 * answers on fd 4, each a JSON message ended by a NUL byte), so a test keeps one live page open — across a daemon
 * restart — with no WebSocket client. `netns` runs the browser inside a test namespace (`ip netns exec`), so it
 * reaches only what the test created. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';

/** The browser's command, or undefined when none is installed (tests then skip and say so). */
export function chromiumPath(): string | undefined {
  for (const c of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('sh', ['-c', `command -v ${c}`], { stdio: 'pipe' }).toString().trim() || undefined;
    } catch {
      /* not this one */
    }
  }
  return undefined;
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  method: string;
}

const live = new Set<Browser>();
process.on('exit', () => {
  for (const b of live) b.killSync();
});

export class Browser {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buffer = '';
  private stderr = '';

  private constructor(
    private readonly proc: ChildProcess,
    private readonly profile: string,
  ) {
    const out = proc.stdio[4] as Readable;
    out.setEncoding('utf8');
    out.on('data', (chunk: string) => this.onData(chunk));
    proc.stderr?.on('data', (b: Buffer) => {
      this.stderr = (this.stderr + b.toString()).slice(-4000);
    });
    proc.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited during ${p.method}; its stderr:\n${this.stderr}`));
      this.pending.clear();
    });
  }

  /** Starts headless Chromium (in `netns` when given) with a window of `width`x`height`. */
  static async launch(opts: { netns?: string; width?: number; height?: number } = {}): Promise<Browser> {
    const bin = chromiumPath();
    if (!bin) throw new Error('chromium is not installed (apt-get install chromium)');
    const profile = mkdtempSync(path.join(tmpdir(), 'appswitch-chromium-'));
    const args = [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
      '--disable-extensions', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--metrics-recording-only',
      '--hide-scrollbars', '--mute-audio', '--remote-debugging-pipe', `--user-data-dir=${profile}`,
      `--window-size=${opts.width ?? 1400},${opts.height ?? 900}`, 'about:blank',
    ];
    const cmd = opts.netns ? ['ip', ['netns', 'exec', opts.netns, bin, ...args]] as const : [bin, args] as const;
    const proc = spawn(cmd[0], [...cmd[1]], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], detached: true });
    const b = new Browser(proc, profile);
    live.add(b);
    await b.send('Browser.getVersion', {}, undefined, 20_000);
    return b;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let i;
    while ((i = this.buffer.indexOf('\0')) >= 0) {
      const text = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 1);
      let msg: { id?: number; result?: Record<string, unknown>; error?: { message: string } };
      try {
        msg = JSON.parse(text) as typeof msg;
      } catch {
        continue;
      }
      if (msg.id === undefined) continue; /* an event: not used */
      const p = this.pending.get(msg.id);
      if (!p) continue;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
    }
  }

  /** Sends one DevTools command (to a page when `sessionId` is given) and waits for its answer. */
  send(method: string, params: Record<string, unknown> = {}, sessionId?: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const msg = JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) });
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: (v) => (clearTimeout(t), resolve(v)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      (this.proc.stdio[3] as Writable).write(`${msg}\0`);
    });
  }

  /** Opens a new tab at `url`. */
  async open(url: string): Promise<Page> {
    const { targetId } = (await this.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await this.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    const page = new Page(this, sessionId);
    await this.send('Page.enable', {}, sessionId);
    await this.send('Runtime.enable', {}, sessionId);
    await page.goto(url);
    return page;
  }

  async close(): Promise<void> {
    try {
      await this.send('Browser.close', {}, undefined, 3000);
    } catch {
      /* already gone */
    }
    this.killSync();
  }

  killSync(): void {
    if (this.proc.pid !== undefined && this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(this.profile, { recursive: true, force: true });
    live.delete(this);
  }
}

export class Page {
  constructor(
    private readonly browser: Browser,
    private readonly sessionId: string,
  ) {}

  async goto(url: string): Promise<void> {
    await this.browser.send('Page.navigate', { url }, this.sessionId);
  }

  /** Evaluates `expression` in the page (awaiting a promise) and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.browser.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, this.sessionId)) as {
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor<T>(expression: string, timeoutMs = 15_000): Promise<T> {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const v = await this.evaluate<T>(expression);
        if (v) return v;
        last = v;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) throw new Error(`the page never satisfied ${expression} in ${timeoutMs} ms (last: ${String(last)})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Writes a PNG of the viewport (or the whole page with fullPage) to `file`. */
  async screenshot(file: string, fullPage = false): Promise<void> {
    const params: Record<string, unknown> = { format: 'png' };
    if (fullPage) params.captureBeyondViewport = true;
    if (fullPage) {
      const size = await this.evaluate<{ w: number; h: number }>('({ w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight })');
      params.clip = { x: 0, y: 0, width: size.w, height: size.h, scale: 1 };
    }
    const { data } = (await this.browser.send('Page.captureScreenshot', params, this.sessionId, 30_000)) as { data: string };
    writeFileSync(file, Buffer.from(data, 'base64'));
  }
}
