/** The live view in a real browser: headless Chromium, inside the UI host's namespace, opens the page of a two-node
 * cluster with traffic flowing — a client app connecting to a server app by name, across nodes, and an app that
 * policy denies — and the test reads the page's DOM (IFACE15.md's contract): the graph's app and service nodes, the
 * client's edge with its rate, the denied edge in red, the tables, the member list, the filter; then the UI's daemon
 * is restarted under the open page, which shows `reconnecting` and comes back `live` by itself. Screenshots go to
 * test-artifacts/live-view/. */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, chromiumPath, type Page } from '../helpers/chromium.js';
import { ROOT, TestBridge, type TestHost, waitFor } from '../helpers/hosts.js';

const ARTIFACTS = path.join(ROOT, 'test-artifacts/live-view');
const UI_PORT = 6664;

/** A client that connects to web:8000 again and again, holding each connection half a second (so that it is seen
 * open), and says on stdout what each attempt gave. */
const CLIENT = [
  'import socket, sys, time',
  'while True:',
  '    try:',
  '        s = socket.create_connection(("web", 8000), timeout=3)',
  '        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")',
  '        s.recv(64)',
  '        time.sleep(0.5)',
  '        s.close()',
  '        print("ok", flush=True)',
  '    except OSError as e:',
  '        print("failed", e.errno, flush=True)',
  '    time.sleep(0.2)',
].join('\n');

interface AppRow {
  id: string;
  name?: string;
}

describe.skipIf(!chromiumPath())('live view in Chromium (needs the chromium package)', () => {
  let bridge: TestBridge;
  let ui: TestHost;
  let other: TestHost;
  let browser: Browser;
  let page: Page;
  const ids: Record<string, string> = {};
  let webService = '';
  const procs: ChildProcess[] = [];
  const uiFlags = (): string[] => ['--node-name', 'lv-ui', '--ui-address', `${ui.address}:${UI_PORT}`, '--ui-allow-remote'];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    bridge = new TestBridge('lv');
    [ui, other] = bridge.hostsOf('lv', 2) as [TestHost, TestHost];
    await ui.startDaemon(uiFlags());
    await other.startDaemon(['--node-name', 'lv-other', '--join', ui.address]);
    await waitFor(async () => {
      const r = await ui.cli(['get', 'members', '--json']);
      return r.code === 0 && (JSON.parse(r.stdout) as Array<{ state: string }>).filter((m) => m.state === 'alive').length === 2;
    }, 20_000);
    procs.push(other.run(['--name', 'web', '--tag', 'grp=1'], ['python3', '-m', 'http.server', '8000', '--bind', '0.0.0.0']));
    await waitFor(async () => (await ui.services()).find((s) => s.name === 'web' && s.port === 8000), 20_000);
    webService = `${(await ui.services()).find((s) => s.name === 'web')?.vip}:8000`;
    procs.push(ui.run(['--name', 'client', '--tag', 'grp=1'], ['python3', '-c', CLIENT]));
    procs.push(ui.run(['--name', 'intruder', '--tag', 'grp=2'], ['python3', '-c', CLIENT]));
    await waitFor(async () => {
      const r = await ui.cli(['get', 'apps', '--json']);
      const apps = r.code === 0 ? (JSON.parse(r.stdout) as AppRow[]) : [];
      for (const a of apps) if (a.name) ids[a.name] = a.id;
      return ids.client && ids.intruder;
    }, 20_000);
    ids.web = (await other.services()).find((s) => s.name === 'web')?.app ?? '';
    browser = await Browser.launch({ netns: ui.ns, width: 1400, height: 900 });
    page = await browser.open(`http://${ui.address}:${UI_PORT}/`);
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await bridge?.destroy();
  });

  it('serves the page to the browser and its event stream is live', async () => {
    expect(await page.waitFor<string>("document.getElementById('conn-state')?.textContent === 'live' && 'live'")).toBe('live');
    expect(await page.evaluate<string>('document.title')).toContain('appswitch');
  });

  it('shows the members, the apps and the service as graph nodes', async () => {
    await page.waitFor(`document.querySelectorAll('#members li[data-state="alive"]').length === 2`);
    const members = await page.evaluate<string[]>(`[...document.querySelectorAll('#members li')].map((li) => li.dataset.member)`);
    expect(members.sort()).toEqual(['lv-other', 'lv-ui']);
    for (const [name, id] of Object.entries(ids)) {
      await page.waitFor(`!!document.querySelector('#graph g.node[data-app="${id}"][data-name="${name}"]')`);
    }
    await page.waitFor(`!!document.querySelector('#graph g.node.service[data-service="${webService}"][data-name="web"]')`);
  });

  it("draws the client's edge to the service with a rate", async () => {
    const rate = await page.waitFor<number>(
      `(() => { const e = document.querySelector('#graph path.edge[data-client="${ids.client}"][data-service="${webService}"]'); const r = e ? Number(e.dataset.rate) : 0; return r > 0 ? r : 0; })()`,
      30_000,
    );
    expect(rate).toBeGreaterThan(0);
    const state = await page.evaluate<string>(`document.querySelector('#graph path.edge[data-client="${ids.client}"]').dataset.state`);
    expect(state).toBe('ok');
    await page.screenshot(path.join(ARTIFACTS, 'graph.png'));
  });

  it('turns the denied client\'s edge red (data-state="denied")', async () => {
    await page.waitFor(`!!document.querySelector('#graph path.edge[data-client="${ids.intruder}"][data-service="${webService}"][data-state="denied"]')`, 30_000);
    const stroke = await page.evaluate<string>(`getComputedStyle(document.querySelector('#graph path.edge[data-client="${ids.intruder}"]')).stroke`);
    expect(stroke).toBe('rgb(214, 47, 47)');
    await page.waitFor(`!!document.querySelector('#edges-table tr[data-client="${ids.intruder}"][data-state="denied"]')`);
    await page.screenshot(path.join(ARTIFACTS, 'denied.png'));
  });

  it('lists the same in the tables', async () => {
    await page.waitFor(`!!document.querySelector('#edges-table tr[data-client="${ids.client}"][data-service="${webService}"]')`);
    for (const id of Object.values(ids)) await page.waitFor(`!!document.querySelector('#apps-table tr[data-app="${id}"]')`);
    const svc = await page.evaluate<string>(`document.querySelector('#services-table tr[data-service="${webService}"]')?.textContent ?? ''`);
    expect(svc).toContain('web');
    expect(svc).toContain('@ lv-other');
    await page.screenshot(path.join(ARTIFACTS, 'page-full.png'), true);
  });

  it('filters every view by name and by tag', async () => {
    const setFilter = (q: string): Promise<unknown> =>
      page.evaluate(`(() => { const f = document.getElementById('filter'); f.value = ${JSON.stringify(q)}; f.dispatchEvent(new Event('input')); return true; })()`);
    const present = (sel: string): Promise<boolean> => page.evaluate<boolean>(`!!document.querySelector('${sel}')`);
    for (const q of ['intruder', 'grp=2']) {
      await setFilter(q);
      expect(await present(`#graph g.node[data-app="${ids.intruder}"]`), q).toBe(true);
      expect(await present(`#apps-table tr[data-app="${ids.intruder}"]`), q).toBe(true);
      expect(await present(`#graph g.node[data-app="${ids.client}"]`), q).toBe(false);
      expect(await present(`#apps-table tr[data-app="${ids.client}"]`), q).toBe(false);
      expect(await present(`#edges-table tr[data-client="${ids.client}"]`), q).toBe(false);
      expect(await present(`#graph path.edge[data-client="${ids.client}"]`), q).toBe(false);
    }
    await setFilter('client');
    expect(await present(`#graph path.edge[data-client="${ids.client}"]`)).toBe(true);
    expect(await present(`#graph g.node.service[data-service="${webService}"]`)).toBe(true); /* the other end of a shown edge */
    expect(await present(`#graph g.node[data-app="${ids.intruder}"]`)).toBe(false);
    await page.screenshot(path.join(ARTIFACTS, 'filtered.png'));
    await setFilter('no-such-thing');
    expect(await page.evaluate<number>(`document.querySelectorAll('#graph g.node').length`)).toBe(0);
    expect(await page.evaluate<number>(`document.querySelectorAll('#apps-table tr[data-app]').length`)).toBe(0);
    await setFilter('');
    expect(await present(`#graph g.node[data-app="${ids.client}"]`)).toBe(true);
  });

  it('shows reconnecting while its daemon restarts, then live again by itself, with the apps back', async () => {
    const d = ui.daemon as ChildProcess;
    await new Promise<void>((resolve) => {
      d.once('exit', () => resolve());
      d.kill('SIGTERM');
    });
    await page.waitFor(`document.getElementById('conn-state').textContent === 'reconnecting'`, 15_000);
    await page.screenshot(path.join(ARTIFACTS, 'reconnecting.png'));
    await ui.startDaemon([...uiFlags(), '--join', other.address]); /* it left the cluster on SIGTERM: it joins again */
    await page.waitFor(`document.getElementById('conn-state').textContent === 'live'`, 30_000);
    await page.waitFor(`!!document.querySelector('#graph g.node[data-app="${ids.client}"]')`, 20_000);
    await page.waitFor(`!!document.querySelector('#graph path.edge[data-client="${ids.client}"][data-service="${webService}"]')`, 30_000);
    await page.screenshot(path.join(ARTIFACTS, 'after-restart.png'));
    /* the picture for docs/live-view.png: once the rate over the last 10 s has built up (not a test: on a slow
     * machine the picture just shows a lower rate) */
    const steady = `Number(document.querySelector('#graph path.edge[data-client="${ids.client}"]')?.dataset.rate ?? 0) >= 1`;
    await page.waitFor(steady, 12_000).catch(() => undefined);
    await page.screenshot(path.join(ARTIFACTS, 'overview.png'));
  });

  it('is closed to programs under appswitch on every node (a daemon port, as the metrics are)', async () => {
    const probe = `import socket\ntry:\n    socket.create_connection(("${ui.address}", ${UI_PORT}), timeout=3)\n    print("connected")\nexcept OSError as e:\n    print("refused", e.errno)`;
    const r = await ui.runToEnd([], ['python3', '-c', probe]);
    expect(r.stdout.trim()).toBe('refused 111');
    /* and on the other node, which learns the port from the UI node's @node record (--ui-allow-remote) */
    const there = await other.runToEnd([], ['python3', '-c', probe]);
    expect(there.stdout.trim()).toBe('refused 111');
  });

  it('will not start on a non-loopback address without --ui-allow-remote', async () => {
    const r = await other.cli(['daemon', '--state-dir', `${other.stateDir}-x`, '--node-address', other.address, '--ui-address', `${other.address}:${UI_PORT}`]);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/--ui-address .* is not a loopback address.*--ui-allow-remote/);
  });

  it('refuses the API to a page of another origin that reaches it by a DNS name (rebinding)', () => {
    const out = execFileSync('ip', ['netns', 'exec', ui.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: evil.example', `http://${ui.address}:${UI_PORT}/v1/apps`]).toString();
    expect(out).toBe('403');
  });
});
