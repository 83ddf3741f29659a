/** The live view's page build: one self-contained file (nothing loaded from elsewhere), its inline script and style
 * allowed by hash in the CSP, the DOM contract's elements present, and no way to set HTML from data. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { inlinePage } from '../../src/ui/build-page.js';
import { cspFor } from '../../src/ui/server.js';

const src = (f: string): string => readFileSync(new URL(`../../src/ui/page/${f}`, import.meta.url), 'utf8');
const page = inlinePage(src('index.html'), src('style.css'), src('app.js'));

describe('the live view page', () => {
  it('is one file: no script, style, image or font from elsewhere', () => {
    expect(page).not.toMatch(/<script[^>]+src=/i);
    expect(page).not.toMatch(/<link[^>]+rel=["']?stylesheet/i);
    expect(page).not.toMatch(/\b(?:src|href)\s*=\s*["']?(?:https?:)?\/\//i);
    expect(page).not.toMatch(/@import|@font-face|url\(\s*["']?(?:https?:)?\/\//i);
    expect(page.match(/<script>/g)).toHaveLength(1);
    expect(page.match(/<style>/g)).toHaveLength(1);
  });

  it('holds the elements of the DOM contract (IFACE15.md)', () => {
    for (const id of ['graph', 'edges-table', 'apps-table', 'services-table', 'members', 'filter', 'conn-state']) expect(page).toContain(`id="${id}"`);
    expect(page).toMatch(/<svg id="graph"/);
    expect(page).toMatch(/<table id="edges-table"/);
    expect(page).toMatch(/<ul id="members"/);
    expect(page).toMatch(/<input id="filter"/);
    expect(page).toMatch(/<span id="conn-state"/);
  });

  it('never turns data into HTML (names and tags come from programs)', () => {
    const js = src('app.js');
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
    expect(js).not.toMatch(/setAttribute\(\s*['"]style['"]|\bstyle:\s*`/); /* the CSP allows no style attributes */
  });

  it('gets a CSP that allows exactly its inline script and style', () => {
    const csp = cspFor(page);
    expect(csp.match(/script-src 'sha256-[^']+'/)).not.toBeNull();
    expect(csp.match(/style-src 'sha256-[^']+'/)).not.toBeNull();
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
  });

  it('refuses sources that would load from elsewhere or end their own block', () => {
    const html = '<html><style>/*@STYLE@*/</style><script>/*@SCRIPT@*/</script></html>';
    expect(() => inlinePage(html, '', 'const s = "</script><script>alert(1)";')).toThrow(/<\/script/);
    expect(() => inlinePage(html, '@import url(https://fonts.example/x.css);', '')).toThrow(/elsewhere/);
    expect(() => inlinePage(html, 'body{background:url(//cdn.example/x.png)}', '')).toThrow(/elsewhere/);
    expect(() => inlinePage(`${html}<script src="https://cdn.example/d3.js"></script>`, '', '')).toThrow(/elsewhere/);
    expect(() => inlinePage(html, '', 'import("https://cdn.example/x.js")')).toThrow(/elsewhere/);
    expect(() => inlinePage('<html></html>', '', '')).toThrow(/once/);
    expect(inlinePage(html, 'b{}', 'x()')).toBe('<html><style>\nb{}</style><script>\nx()</script></html>');
  });
});
