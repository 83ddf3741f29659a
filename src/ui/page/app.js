// @ts-check
/* The live view's script (inlined into the page at build time; no library, nothing from the network but this
 * daemon's read-only API). It polls the lists every POLL_MS, refreshes at once on an event from /v1/events, lays
 * apps and services out left to right (clients, services, their instances) with a small force layout for the vertical
 * order, and renders the graph and the tables by DOM calls only: names, tags and command lines come from programs,
 * so they are set as text, never parsed as HTML. The DOM contract (ids, classes, data-* attributes) is IFACE15.md's. */
(() => {
  'use strict';
  const POLL_MS = 1500;
  const RECENT_MS = 10_000;
  const W = 1000;
  /** The drawing's height: at least MIN_H, more when a column holds more nodes than fit (see place). */
  const MIN_H = 560;
  let H = MIN_H;
  /** Vertical room per node in a column (its label included). */
  const ROW = 78;
  const SVG = 'http://www.w3.org/2000/svg';
  const NODE_COLORS = ['#3a6fd8', '#2e9d8f', '#8e5bd8', '#d8793a', '#c2477a', '#5b8c2e', '#2e7fb3', '#a0782a'];

  /** @typedef {{ app: string, name: string | null, identity: string, node: string }} AppRef */
  /** @typedef {{ vip: string, port: number, name: string | null }} ServiceRef */
  /** @typedef {{ client: AppRef, service: ServiceRef, connections: number, active: number, ratePerSecond: number,
   *   refused: number, denied: number, fastpath: number, tcp: number, lastSeen: string }} EdgeView */
  /** @typedef {{ id: string, ip?: string, identity: string, name?: string, tags: Record<string, string>,
   *   services: string[], cmd: string[] }} AppView */
  /** @typedef {{ vip: string, port: number, proto: string, endpoint: string, node: string, app: string,
   *   name?: string, tags: Record<string, string> }} ServiceView */
  /** @typedef {{ name: string, address: string, state: string }} MemberView */
  /** @typedef {{ id: string, kind: 'app' | 'service', label: string, sub: string, name: string, node: string,
   *   tags: Record<string, string>, search: string, rank: number, x: number, y: number, vx: number, vy: number }} GNode */

  /** @type {{ node: string, nodeAddress: string, members: MemberView[], apps: AppView[], services: ServiceView[],
   *   edges: EdgeView[], trapsPerSecond: number, polledAt: number }} */
  const data = { node: '', nodeAddress: '', members: [], apps: [], services: [], edges: [], trapsPerSecond: 0, polledAt: 0 };
  /** Per edge: the denied/refused counts seen at each poll of the last RECENT_MS, to tell recent ones from old. */
  /** @type {Map<string, Array<{ at: number, denied: number, refused: number }>>} */
  const countsSeen = new Map();
  /** Edges an event marked denied/refused (until the given time). @type {Map<string, { state: string, until: number }>} */
  const flagged = new Map();
  /** Layout positions, kept across updates so the picture stays still. @type {Map<string, GNode>} */
  const layout = new Map();
  let layoutKey = '';

  const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
  const filterInput = /** @type {HTMLInputElement} */ ($('filter'));

  /** @param {string} tag @param {Record<string, string>} [attrs] @param {string} [text] */
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs ?? {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  /** @param {string} tag @param {Record<string, string | number>} [attrs] */
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs ?? {})) e.setAttribute(k, String(v));
    return e;
  }
  /** A coloured dot (set through the CSSOM: the page's CSP allows no style attributes). @param {string} cls @param {string} color */
  function swatch(cls, color) {
    const e = el('span', { class: cls });
    e.style.background = color;
    return e;
  }
  /** @param {Node} parent @param {Node[]} kids */
  function replace(parent, kids) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    for (const k of kids) parent.appendChild(k);
  }

  /** @type {Map<string, string>} */
  const nodeColors = new Map();
  /** @param {string} node */
  function colorOf(node) {
    if (!node) return '#8d96a8';
    let c = nodeColors.get(node);
    if (!c) {
      c = NODE_COLORS[nodeColors.size % NODE_COLORS.length] ?? '#8d96a8';
      nodeColors.set(node, c);
    }
    return c;
  }

  const svcKey = (/** @type {{ vip: string, port: number }} */ s) => `${s.vip}:${s.port}`;
  const edgeKey = (/** @type {EdgeView} */ e) => `${e.client.app}>${svcKey(e.service)}`;
  /** A rate for people: 0.7, 4.2, 12, 130. @param {number} r */
  const rate = (r) => (r < 10 ? (Math.round(r * 10) / 10).toString() : Math.round(r).toString());
  const tagList = (/** @type {Record<string, string>} */ t) => Object.entries(t ?? {}).map(([k, v]) => `${k}=${v}`);

  // ---- data ------------------------------------------------------------------------------------------------------

  /** @param {string} path */
  async function get(path) {
    const r = await fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  let polling = false;
  let pollAgain = false;
  async function poll() {
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    lastPoll = Date.now();
    try {
      const [info, status, members, apps, services, edges] = await Promise.all([
        get('/v1/info'), get('/v1/status'), get('/v1/members'), get('/v1/apps'), get('/v1/services'), get('/v1/edges?scope=cluster'),
      ]);
      data.node = info.node;
      data.nodeAddress = info.nodeAddress;
      data.trapsPerSecond = status.trapsPerSecond ?? 0;
      data.members = members;
      data.apps = apps;
      data.services = services;
      data.edges = edges.edges ?? [];
      data.polledAt = Date.now();
      noteHistory();
      render();
      $('updated').textContent = `updated ${new Date(data.polledAt).toLocaleTimeString()}`;
      document.body.dataset.polled = String(data.polledAt);
    } catch {
      $('updated').textContent = data.polledAt ? `no answer since ${new Date(data.polledAt).toLocaleTimeString()}` : 'no answer yet';
    } finally {
      polling = false;
      if (pollAgain) {
        pollAgain = false;
        setTimeout(poll, 0);
      }
    }
  }

  function noteHistory() {
    const now = Date.now();
    const seen = new Set();
    for (const e of data.edges) {
      const k = edgeKey(e);
      seen.add(k);
      let h = countsSeen.get(k);
      if (!h) countsSeen.set(k, (h = []));
      h.push({ at: now, denied: e.denied, refused: e.refused });
      while (h.length > 1 && (h[1]?.at ?? now) <= now - RECENT_MS) h.shift();
    }
    for (const k of [...countsSeen.keys()]) if (!seen.has(k)) countsSeen.delete(k);
    for (const [k, f] of [...flagged]) if (f.until <= now) flagged.delete(k);
  }

  /** ok, refused or denied: denials (else refusals) that grew over the last RECENT_MS (against the oldest look kept,
   * the last one at least RECENT_MS old), or — while this page has known the edge for less than that — any, when the
   * edge saw activity inside the window; or an event just reported one. @param {EdgeView} e */
  function stateOf(e) {
    const now = Date.now();
    const k = edgeKey(e);
    const f = flagged.get(k);
    if (f && f.until > now) return f.state;
    const first = (countsSeen.get(k) ?? [])[0];
    if (!first) return 'ok';
    const young = first.at > now - RECENT_MS && now - Date.parse(e.lastSeen) < RECENT_MS;
    const grew = (/** @type {'denied' | 'refused'} */ field) => e[field] > first[field] || (young && e[field] > 0);
    if (grew('denied')) return 'denied';
    if (grew('refused')) return 'refused';
    return 'ok';
  }

  // ---- the model: graph nodes and links from the lists -----------------------------------------------------------

  function model() {
    /** @type {Map<string, GNode>} */
    const nodes = new Map();
    const appNode = (/** @type {string} */ id, /** @type {Partial<GNode>} */ p) => {
      let n = nodes.get(`app:${id}`);
      if (!n) {
        n = { id: `app:${id}`, kind: 'app', label: id, sub: '', name: '', node: '', tags: {}, search: '', rank: 0, x: 0, y: 0, vx: 0, vy: 0 };
        nodes.set(n.id, n);
      }
      for (const [k, v] of Object.entries(p)) if (v !== undefined && v !== '' && v !== null) /** @type {any} */ (n)[k] = v;
      return n;
    };
    for (const a of data.apps) {
      appNode(a.id, { label: a.name ?? a.ip ?? a.identity, name: a.name ?? '', sub: a.ip ?? a.identity, node: data.node, tags: a.tags });
    }
    /** @type {Map<string, { key: string, name: string, vip: string, port: number, instances: ServiceView[], tags: Record<string, string> }>} */
    const services = new Map();
    for (const s of data.services) {
      const key = svcKey(s);
      let g = services.get(key);
      if (!g) services.set(key, (g = { key, name: s.name ?? '', vip: s.vip, port: s.port, instances: [], tags: {} }));
      g.instances.push(s);
      Object.assign(g.tags, s.tags);
      if (s.name && !g.name) g.name = s.name;
      if (!s.node.startsWith('@')) appNode(s.app, { label: s.name ?? s.vip, name: s.name ?? '', sub: s.vip, node: s.node, tags: s.tags });
    }
    for (const e of data.edges) {
      const key = svcKey(e.service);
      if (!services.has(key)) services.set(key, { key, name: e.service.name ?? '', vip: e.service.vip, port: e.service.port, instances: [], tags: {} });
      appNode(e.client.app, { label: e.client.name ?? e.client.identity, name: e.client.name ?? '', sub: e.client.identity, node: e.client.node });
    }
    for (const g of services.values()) {
      nodes.set(`svc:${g.key}`, {
        id: `svc:${g.key}`, kind: 'service', label: g.name || g.key, sub: g.name ? g.key : `${g.instances.length} instance${g.instances.length === 1 ? '' : 's'}`,
        name: g.name, node: '', tags: g.tags, search: '', rank: 1, x: 0, y: 0, vx: 0, vy: 0,
      });
    }
    for (const n of nodes.values()) n.search = [n.id.slice(4), n.label, n.sub, n.name, n.node, ...tagList(n.tags)].join('\n').toLowerCase();
    /** @type {Array<{ from: string, to: string }>} */
    const serves = [];
    for (const g of services.values()) {
      for (const app of new Set(g.instances.filter((i) => !i.node.startsWith('@')).map((i) => i.app))) serves.push({ from: `svc:${g.key}`, to: `app:${app}` });
    }
    const edges = data.edges.map((e) => ({ e, from: `app:${e.client.app}`, to: `svc:${svcKey(e.service)}` }));
    return { nodes, services, serves, edges };
  }

  /** Columns from left to right: an app that is only a client, the services it reaches, their instances, and on:
   * rank(service) > rank(its clients), rank(instance app) > rank(service); cycles stop after a few rounds. */
  function assignRanks(/** @type {ReturnType<typeof model>} */ m) {
    for (const n of m.nodes.values()) n.rank = n.kind === 'service' ? 1 : 0;
    for (let round = 0; round < 6; round++) {
      let changed = false;
      for (const { from, to } of m.edges) {
        const a = m.nodes.get(from), s = m.nodes.get(to);
        if (a && s && s.rank < a.rank + 1) ((s.rank = a.rank + 1), (changed = true));
      }
      for (const { from, to } of m.serves) {
        const s = m.nodes.get(from), a = m.nodes.get(to);
        if (a && s && a.rank < s.rank + 1) ((a.rank = s.rank + 1), (changed = true));
      }
      if (!changed) break;
    }
    for (const n of m.nodes.values()) if (n.kind === 'app' && !m.edges.some((x) => x.from === n.id) && !m.serves.some((x) => x.to === n.id)) n.rank = 0;
  }

  /** A few hundred steps of a small force simulation: columns fixed by rank, vertical order by springs along links
   * and repulsion between nodes. Warm-started from the last positions; runs only when the set of nodes or links
   * changed. @param {ReturnType<typeof model>} m */
  function place(m) {
    const key = [...m.nodes.keys()].sort().join('|') + '#' + [...m.edges.map((x) => x.from + '>' + x.to), ...m.serves.map((x) => x.from + '>' + x.to)].sort().join('|');
    const nodes = [...m.nodes.values()];
    const maxRank = Math.max(1, ...nodes.map((n) => n.rank));
    /** @type {Map<number, number>} */
    const perRank = new Map();
    for (const n of nodes) perRank.set(n.rank, (perRank.get(n.rank) ?? 0) + 1);
    const height = Math.max(MIN_H, 80 + ROW * Math.max(0, ...perRank.values()));
    if (height !== H) {
      H = height;
      layoutKey = ''; /* lay out again in the new room */
      document.getElementById('graph')?.setAttribute('viewBox', `0 0 ${W} ${H}`);
    }
    const colX = (/** @type {number} */ r) => 110 + (r * (W - 220)) / maxRank;
    for (const n of nodes) {
      const old = layout.get(n.id);
      if (old) ((n.x = old.x), (n.y = old.y));
      else {
        n.x = colX(n.rank);
        const sameCol = nodes.filter((o) => o.rank === n.rank);
        n.y = (H * (sameCol.indexOf(n) + 1)) / (sameCol.length + 1);
      }
    }
    if (key !== layoutKey) {
      layoutKey = key;
      const links = [...m.edges, ...m.serves].map((l) => [m.nodes.get(l.from), m.nodes.get(l.to)]).filter((p) => p[0] && p[1]);
      const steps = Math.max(30, Math.min(300, Math.floor(4e6 / Math.max(1, nodes.length * nodes.length))));
      for (let step = 0, t = 1; step < steps; step++, t *= 0.985) {
        for (const n of nodes) ((n.vx = 0), (n.vy = 0));
        for (let i = 0; i < nodes.length; i++) {
          for (let j = i + 1; j < nodes.length; j++) {
            const a = /** @type {GNode} */ (nodes[i]), b = /** @type {GNode} */ (nodes[j]);
            const dx = a.x - b.x, dy = a.y - b.y;
            const d2 = Math.max(dx * dx + dy * dy, 25);
            const f = (a.rank === b.rank ? 5200 : 1600) / d2;
            const d = Math.sqrt(d2);
            ((a.vx += (dx / d) * f), (a.vy += (dy / d) * f), (b.vx -= (dx / d) * f), (b.vy -= (dy / d) * f));
          }
        }
        for (const [a, b] of links) {
          if (!a || !b) continue;
          const dy = b.y - a.y;
          ((a.vy += dy * 0.04), (b.vy -= dy * 0.04));
        }
        for (const n of nodes) {
          n.vy += (H / 2 - n.y) * 0.004;
          n.vx += (colX(n.rank) - n.x) * 0.2;
          n.x += Math.max(-20, Math.min(20, n.vx)) * t;
          n.y = Math.max(40, Math.min(H - 40, n.y + Math.max(-20, Math.min(20, n.vy)) * t));
        }
      }
      /* fewer crossings: each node moves to the mean height of its neighbours (the barycentre heuristic of layered
       * drawings), a column at a time, then the columns are spread again */
      /** @type {Map<string, GNode[]>} */
      const nbrs = new Map();
      for (const [a, b] of links) {
        if (!a || !b) continue;
        nbrs.set(a.id, [...(nbrs.get(a.id) ?? []), b]);
        nbrs.set(b.id, [...(nbrs.get(b.id) ?? []), a]);
      }
      spreadColumns(nodes);
      for (let sweep = 0; sweep < 4; sweep++) {
        for (const n of nodes) {
          const ns = nbrs.get(n.id);
          if (ns?.length) n.y = 0.5 * n.y + 0.5 * (ns.reduce((s, o) => s + o.y, 0) / ns.length);
        }
        spreadColumns(nodes);
      }
      for (const n of nodes) n.x = colX(n.rank);
    }
    layout.clear();
    for (const n of nodes) layout.set(n.id, n);
  }

  /** Keeps the simulation's order in each column but at least MIN_GAP apart (labels never overlap), centred. */
  function spreadColumns(/** @type {GNode[]} */ nodes) {
    const MIN_GAP = ROW;
    /** @type {Map<number, GNode[]>} */
    const cols = new Map();
    for (const n of nodes) {
      const c = cols.get(n.rank) ?? [];
      c.push(n);
      cols.set(n.rank, c);
    }
    for (const col of cols.values()) {
      col.sort((a, b) => a.y - b.y);
      const gap = Math.min(MIN_GAP, (H - 80) / Math.max(1, col.length - 1));
      for (let i = 1; i < col.length; i++) {
        const prev = /** @type {GNode} */ (col[i - 1]), n = /** @type {GNode} */ (col[i]);
        if (n.y < prev.y + gap) n.y = prev.y + gap;
      }
      const first = /** @type {GNode} */ (col[0]), last = /** @type {GNode} */ (col[col.length - 1]);
      const shift = H / 2 - (first.y + last.y) / 2;
      for (const n of col) n.y += shift;
    }
  }

  // ---- the filter -------------------------------------------------------------------------------------------------

  function filterText() {
    return filterInput.value.trim().toLowerCase();
  }
  /** Which nodes and edges are shown: nodes that match, edges with an end that matches, and the other end of those. */
  function visibility(/** @type {ReturnType<typeof model>} */ m) {
    const q = filterText();
    if (!q) return { node: () => true, edge: () => true, q };
    const words = q.split(/\s+/);
    const hit = (/** @type {GNode | undefined} */ n) => !!n && words.every((w) => n.search.includes(w));
    const shown = new Set([...m.nodes.values()].filter(hit).map((n) => n.id));
    const edgeShown = (/** @type {{ from: string, to: string }} */ l) => hit(m.nodes.get(l.from)) || hit(m.nodes.get(l.to));
    for (const l of m.edges) if (edgeShown(l)) (shown.add(l.from), shown.add(l.to));
    return { node: (/** @type {string} */ id) => shown.has(id), edge: edgeShown, q };
  }

  // ---- rendering ---------------------------------------------------------------------------------------------------

  function render() {
    const m = model();
    assignRanks(m);
    place(m);
    const vis = visibility(m);
    renderGraph(m, vis);
    renderTables(m, vis);
    renderMembers();
    $('node-name').textContent = data.node;
    $('node-address').textContent = data.nodeAddress;
    $('count-apps').textContent = String([...m.nodes.values()].filter((n) => n.kind === 'app').length);
    $('count-services').textContent = String(m.services.size);
    $('count-edges').textContent = String(data.edges.length);
    $('count-rate').textContent = rate(data.edges.reduce((s, e) => s + e.ratePerSecond, 0));
    $('count-traps').textContent = String(data.trapsPerSecond);
  }

  /** The path of an edge from an app's circle to a service's box, bent a little so that opposite edges part. */
  function edgePath(/** @type {GNode} */ a, /** @type {GNode} */ b, /** @type {number} */ bend) {
    const dx = b.x - a.x, dy = b.y - a.y;
    const len = Math.max(1, Math.hypot(dx, dy));
    const ux = dx / len, uy = dy / len;
    const sx = a.x + ux * (a.kind === 'app' ? 22 : 62), sy = a.y + uy * (a.kind === 'app' ? 22 : 16);
    const tx = b.x - ux * (b.kind === 'app' ? 24 : 64), ty = b.y - uy * (b.kind === 'app' ? 24 : 18);
    const mx = (sx + tx) / 2 - uy * bend, my = (sy + ty) / 2 + ux * bend;
    return { d: `M${sx.toFixed(1)},${sy.toFixed(1)} Q${mx.toFixed(1)},${my.toFixed(1)} ${tx.toFixed(1)},${ty.toFixed(1)}`, lx: (sx + 2 * mx + tx) / 4, ly: (sy + 2 * my + ty) / 4 };
  }

  function renderGraph(/** @type {ReturnType<typeof model>} */ m, /** @type {ReturnType<typeof visibility>} */ vis) {
    const servesKids = [];
    for (const l of m.serves) {
      const a = m.nodes.get(l.from), b = m.nodes.get(l.to);
      if (!a || !b || !vis.node(a.id) || !vis.node(b.id)) continue;
      servesKids.push(svg('path', { class: 'serves', d: edgePath(a, b, 0).d, 'data-service': a.id.slice(4), 'data-app': b.id.slice(4) }));
    }
    replace(/** @type {Node} */ (document.getElementById('layer-serves')), servesKids);
    const edgeKids = [];
    for (const { e, from, to } of m.edges) {
      const a = m.nodes.get(from), b = m.nodes.get(to);
      if (!a || !b || !vis.edge({ from, to })) continue;
      const state = stateOf(e);
      const p = edgePath(a, b, 14);
      const width = 1.6 + Math.min(5, Math.log2(1 + e.ratePerSecond) * 1.4);
      const path = svg('path', {
        class: 'edge', d: p.d, 'stroke-width': width.toFixed(1),
        'data-client': e.client.app, 'data-service': svcKey(e.service), 'data-rate': String(e.ratePerSecond), 'data-state': state,
      });
      const title = svg('title');
      title.textContent = `${a.label} → ${b.label}: ${rate(e.ratePerSecond)}/s, ${e.active} active, ${e.connections} total, ${e.refused} refused, ${e.denied} denied`;
      path.appendChild(title);
      edgeKids.push(path);
      const label = svg('text', { class: `edge-label ${state}`, x: p.lx.toFixed(1), y: (p.ly - 5).toFixed(1), 'text-anchor': 'middle' });
      label.textContent = state === 'denied' ? `denied ×${e.denied}` : state === 'refused' ? `refused ×${e.refused}` : `${rate(e.ratePerSecond)}/s`;
      edgeKids.push(label);
    }
    replace(/** @type {Node} */ (document.getElementById('layer-edges')), edgeKids);
    const nodeKids = [];
    for (const n of m.nodes.values()) {
      if (!vis.node(n.id)) continue;
      const g = svg('g', { class: n.kind === 'app' ? 'node' : 'node service', transform: `translate(${n.x.toFixed(1)},${n.y.toFixed(1)})`, 'data-name': n.name });
      g.setAttribute(n.kind === 'app' ? 'data-app' : 'data-service', n.id.slice(4));
      if (n.kind === 'app') {
        g.appendChild(svg('circle', { r: 18, fill: colorOf(n.node) }));
        const initial = svg('text', { 'text-anchor': 'middle', y: 4.5, fill: '#fff', 'font-weight': 700 });
        initial.textContent = (n.label[0] ?? '?').toUpperCase();
        g.appendChild(initial);
        const label = svg('text', { class: 'label', 'text-anchor': 'middle', y: 34 });
        label.textContent = n.label;
        g.appendChild(label);
        const sub = svg('text', { class: 'sublabel', 'text-anchor': 'middle', y: 47 });
        sub.textContent = [n.sub !== n.label ? n.sub : '', tagList(n.tags).join(' ')].filter(Boolean).join(' · ');
        g.appendChild(sub);
      } else {
        g.appendChild(svg('rect', { x: -62, y: -16, width: 124, height: 32, rx: 7 }));
        const label = svg('text', { class: 'label', 'text-anchor': 'middle', y: n.name ? -1 : 4 });
        label.textContent = n.label.length > 18 ? `${n.label.slice(0, 17)}…` : n.label;
        g.appendChild(label);
        if (n.name) {
          const sub = svg('text', { class: 'sublabel', 'text-anchor': 'middle', y: 11 });
          sub.textContent = n.sub;
          g.appendChild(sub);
        }
      }
      const title = svg('title');
      title.textContent = `${n.kind === 'app' ? 'app' : 'service'} ${n.id.slice(4)}${n.node ? ` on ${n.node}` : ''}${tagList(n.tags).length ? `\n${tagList(n.tags).join(' ')}` : ''}`;
      g.appendChild(title);
      nodeKids.push(g);
    }
    replace(/** @type {Node} */ (document.getElementById('layer-nodes')), nodeKids);
    const empty = /** @type {Element} */ (document.getElementById('graph-empty'));
    empty.textContent = vis.q ? 'nothing matches the filter' : 'no apps yet';
    empty.setAttribute('visibility', nodeKids.length ? 'hidden' : 'visible');
  }

  /** @param {string[]} tags */
  function tagCell(tags) {
    const td = el('td');
    for (const t of tags) td.appendChild(el('span', { class: 'tag' }, t));
    return td;
  }

  /** @param {HTMLElement} table @param {HTMLElement[]} rows @param {number} cols @param {string} none */
  function fillTable(table, rows, cols, none) {
    const body = /** @type {HTMLElement} */ (table.querySelector('tbody'));
    if (!rows.length) {
      const tr = el('tr', { class: 'empty' });
      tr.appendChild(el('td', { colspan: String(cols) }, none));
      rows = [tr];
    }
    replace(body, rows);
  }

  function ago(/** @type {string} */ iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  }

  function renderTables(/** @type {ReturnType<typeof model>} */ m, /** @type {ReturnType<typeof visibility>} */ vis) {
    const none = vis.q ? 'nothing matches the filter' : 'none yet';
    const edgeRows = [];
    const sorted = [...m.edges].sort((x, y) => y.e.ratePerSecond - x.e.ratePerSecond || y.e.connections - x.e.connections);
    for (const { e, from, to } of sorted) {
      if (!vis.edge({ from, to })) continue;
      const state = stateOf(e);
      const tr = el('tr', { 'data-client': e.client.app, 'data-service': svcKey(e.service), 'data-state': state });
      const client = el('td');
      client.appendChild(swatch('dot', colorOf(e.client.node)));
      client.appendChild(document.createTextNode(e.client.name ?? e.client.identity));
      tr.appendChild(client);
      tr.appendChild(el('td', { class: 'muted' }, e.client.node || '—'));
      tr.appendChild(el('td', { class: 'mono' }, e.service.name ? `${e.service.name} (${svcKey(e.service)})` : svcKey(e.service)));
      tr.appendChild(el('td', { class: 'num' }, rate(e.ratePerSecond)));
      for (const v of [e.active, e.connections, e.fastpath, e.tcp, e.refused, e.denied]) tr.appendChild(el('td', { class: 'num' }, String(v)));
      tr.appendChild(el('td', { class: 'muted' }, ago(e.lastSeen)));
      edgeRows.push(tr);
    }
    fillTable($('edges-table'), edgeRows, 11, none);

    const appRows = [];
    for (const n of m.nodes.values()) {
      if (n.kind !== 'app' || !vis.node(n.id)) continue;
      const id = n.id.slice(4);
      const a = data.apps.find((x) => x.id === id);
      const tr = el('tr', { 'data-app': id, 'data-name': n.name });
      const name = el('td');
      name.appendChild(swatch('dot', colorOf(n.node)));
      name.appendChild(document.createTextNode(n.name || '—'));
      name.appendChild(el('div', { class: 'muted mono' }, id));
      tr.appendChild(name);
      tr.appendChild(el('td', { class: 'mono' }, a ? (a.ip ?? a.identity) : n.sub));
      tr.appendChild(el('td', { class: 'muted' }, n.node || '—'));
      tr.appendChild(tagCell(tagList(n.tags)));
      const svcs = a ? a.services : data.services.filter((s) => s.app === id).map((s) => `${s.vip}:${s.port}/${s.proto}`);
      tr.appendChild(el('td', { class: 'mono' }, svcs.join(' ') || '—'));
      appRows.push(tr);
    }
    fillTable($('apps-table'), appRows, 5, none);

    const svcRows = [];
    for (const g of m.services.values()) {
      if (!vis.node(`svc:${g.key}`)) continue;
      const tr = el('tr', { 'data-service': g.key, 'data-name': g.name });
      tr.appendChild(el('td', {}, g.name || '—'));
      tr.appendChild(el('td', { class: 'mono' }, g.key));
      const inst = el('td', { class: 'mono' });
      for (const i of g.instances) inst.appendChild(el('div', {}, `${i.endpoint} @ ${i.node}`));
      if (!g.instances.length) inst.textContent = 'no instance';
      tr.appendChild(inst);
      tr.appendChild(tagCell(tagList(g.tags)));
      svcRows.push(tr);
    }
    fillTable($('services-table'), svcRows, 4, none);
  }

  function renderMembers() {
    const items = [];
    for (const mb of [...data.members].sort((a, b) => a.name.localeCompare(b.name))) {
      const li = el('li', { 'data-member': mb.name, 'data-state': mb.state });
      li.appendChild(swatch('swatch', colorOf(mb.name)));
      li.appendChild(el('span', { class: 'name', title: mb.name }, mb.name));
      li.appendChild(el('span', { class: `state ${/^[a-z]+$/.test(mb.state) ? mb.state : ''}` }, mb.state));
      li.appendChild(el('span', { class: 'address' }, mb.address));
      items.push(li);
    }
    replace($('members'), items);
  }

  // ---- the event stream ------------------------------------------------------------------------------------------

  const connState = $('conn-state');
  /** @param {'live' | 'reconnecting'} s */
  function setConn(s) {
    connState.textContent = s;
    connState.className = s;
  }

  /** A poll soon after an event, but at most one a second (a denied client that retries in a loop must not turn
   * the page into a load on the daemon). */
  let soon = 0;
  let lastPoll = 0;
  function pollSoon() {
    if (soon) return;
    soon = window.setTimeout(() => ((soon = 0), void poll()), Math.max(150, lastPoll + 1000 - Date.now()));
  }

  /** The events the page listens to: all but connect.allowed, one per connection (the edges' rates, polled, say
   * that), so that a busy network costs the page and the daemon nothing per connection. */
  const EVENT_TYPES = ['app.started', 'app.ended', 'service.up', 'service.down', 'member.state', 'connect.refused',
    'connect.denied', 'accept.unidentified', 'exposure.changed', 'events.lost'];

  /** Events not drawn yet in the list (at most the last EVENTS_SHOWN), drawn at most every 500 ms. @type {any[]} */
  let unshown = [];
  const EVENTS_SHOWN = 12;
  let drawTimer = 0;

  /** @param {any} ev */
  function onEvent(ev) {
    if (!ev || typeof ev.type !== 'string') return;
    if ((ev.type === 'connect.denied' || ev.type === 'connect.refused') && ev.client && ev.service) {
      flagged.set(`${ev.client.app}>${ev.service.vip}:${ev.service.port}`, { state: ev.type === 'connect.denied' ? 'denied' : 'refused', until: Date.now() + RECENT_MS });
    }
    unshown.push(ev);
    if (unshown.length > EVENTS_SHOWN) unshown = unshown.slice(-EVENTS_SHOWN);
    if (!drawTimer) drawTimer = window.setTimeout(drawEvents, 500);
    pollSoon();
  }

  function drawEvents() {
    drawTimer = 0;
    const list = $('events');
    for (const ev of unshown) {
      const who = ev.client ? (ev.client.name ?? ev.client.identity) : ev.member ? ev.member.name : '';
      const what = ev.service ? (ev.service.name ?? `${ev.service.vip}:${ev.service.port}`) : ev.member ? ev.member.state : ev.peer ?? ev.detail ?? '';
      const li = el('li', { class: ev.type.replace('.', '-') });
      li.appendChild(el('span', { class: 't' }, new Date(ev.time ?? Date.now()).toLocaleTimeString()));
      li.appendChild(document.createTextNode(`${ev.type} ${who}${what ? ` → ${what}` : ''}${ev.type === 'events.lost' ? ` (${ev.lost})` : ''}`));
      li.title = li.textContent ?? '';
      list.insertBefore(li, list.firstChild);
    }
    unshown = [];
    while (list.childNodes.length > EVENTS_SHOWN) list.removeChild(/** @type {Node} */ (list.lastChild));
  }

  /** @type {EventSource | undefined} */
  let stream;
  function connect() {
    stream = new EventSource(`/v1/events?type=${EVENT_TYPES.join(',')}`);
    stream.onopen = () => {
      setConn('live');
      pollSoon();
    };
    stream.onerror = () => {
      setConn('reconnecting');
      if (stream && stream.readyState === EventSource.CLOSED) {
        stream = undefined;
        setTimeout(connect, 2000); /* the browser gave up (an HTTP error): start again */
      }
    };
    const handler = (/** @type {MessageEvent} */ m) => {
      try {
        onEvent(JSON.parse(m.data));
      } catch {
        /* not JSON: ignored */
      }
    };
    stream.onmessage = handler;
    for (const t of EVENT_TYPES) stream.addEventListener(t, handler);
  }

  // ---- start -------------------------------------------------------------------------------------------------------

  const initial = new URLSearchParams(location.search).get('filter');
  if (initial) filterInput.value = initial;
  filterInput.addEventListener('input', () => {
    const u = new URL(location.href);
    if (filterInput.value) u.searchParams.set('filter', filterInput.value);
    else u.searchParams.delete('filter');
    history.replaceState(null, '', u);
    render();
  });
  setConn('reconnecting');
  connect();
  void poll();
  setInterval(poll, POLL_MS);
})();
