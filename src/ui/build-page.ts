/** Builds the live view's page (`npm install` and `npm run build` run it after tsc): src/ui/page/index.html with
 * style.css and app.js inlined, written to dist/ui/page.html — one file, nothing to fetch, nothing from the internet.
 * Refuses (exit 1) a source that would load anything from elsewhere or end its own <script>/<style> early. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Inlines `style` and `script` into `html` at its /*@STYLE@*\/ and /*@SCRIPT@*\/ markers; throws on what the page
 * must not contain. */
export function inlinePage(html: string, style: string, script: string): string {
  if (/<\/style/i.test(style)) throw new Error('style.css contains "</style"');
  if (/<\/script|<!--/i.test(script)) throw new Error('app.js contains "</script" or "<!--": it would end the inline script');
  for (const [name, text] of [['index.html', html], ['style.css', style]] as const) {
    const ext = /\b(?:src|href)\s*=\s*["']?(?:https?:)?\/\/|@import|url\(\s*["']?(?:https?:)?\/\//i.exec(text);
    if (ext) throw new Error(`${name} loads something from elsewhere (${ext[0]}): the page must be self-contained`);
  }
  if (/\bimport\s*\(|\bimportScripts\b|fetch\(\s*["'`](?:https?:)?\/\//.test(script)) throw new Error('app.js loads something from elsewhere');
  const marks = ['/*@STYLE@*/', '/*@SCRIPT@*/'];
  for (const m of marks) if (html.split(m).length !== 2) throw new Error(`index.html must hold ${m} once`);
  return html.replace('/*@STYLE@*/', () => `\n${style}`).replace('/*@SCRIPT@*/', () => `\n${script}`);
}

/** The repository root (this file runs from dist/src/ui). */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function buildPage(root = ROOT): string {
  const src = path.join(root, 'src/ui/page');
  const read = (f: string): string => readFileSync(path.join(src, f), 'utf8');
  const page = inlinePage(read('index.html'), read('style.css'), read('app.js'));
  const out = path.join(root, 'dist/ui/page.html');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, page);
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const out = buildPage();
    process.stdout.write(`live view page: ${path.relative(process.cwd(), out)}\n`);
  } catch (e) {
    process.stderr.write(`building the live view page failed: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
