// Attack program for test/security/peer-api.test.ts: asks a daemon's peer API (TCP 7947) who every client endpoint
// of a port range is, over and over, so that its answers (which the daemon "claims") are taken from under the
// legitimate server's accept. With "key" the requests carry a valid HMAC (a process that stole the key).
//   node peer-spam.mjs '{"target":"192.0.2.1:7947","ip":"192.0.2.1","low":33000,"high":33019,"ms":8000,"key":"FILE"}'
// Prints one JSON line: {"requests":N,"answers":N,"identities":[...],"connects":N}.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';

const spec = JSON.parse(process.argv[2] ?? '{}');
let key;
if (spec.key) {
  const line = readFileSync(spec.key, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).find(Boolean);
  key = /^[0-9a-f]{64}$/i.test(line) ? Buffer.from(line, 'hex') : Buffer.from(line, 'base64');
}
const sign = (m) => {
  const body = JSON.stringify(m);
  return key ? JSON.stringify({ ...m, mac: createHmac('sha256', key).update(body).digest('hex') }) : body;
};
const [host, port] = [spec.target.slice(0, spec.target.lastIndexOf(':')), Number(spec.target.slice(spec.target.lastIndexOf(':') + 1))];
const end = Date.now() + (spec.ms ?? 8000);
let requests = 0;
let answers = 0;
let connects = 0;
let id = 1;
const identities = new Set();
let sock;
let buf = '';
function connect() {
  sock = net.createConnection({ host, port });
  sock.on('connect', () => connects++);
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const m = JSON.parse(l);
        if (typeof m.identity === 'string') {
          answers++;
          identities.add(m.identity);
        }
      } catch {
        /* not ours to parse */
      }
    }
  });
  sock.on('error', () => {});
  sock.on('close', () => {
    sock = undefined;
  });
}
while (Date.now() < end) {
  if (!sock) connect();
  for (let p = spec.low; p <= spec.high; p++) {
    if (sock && sock.writable) {
      sock.write(sign({ id: id++, t: Date.now(), who: `${spec.ip}:${p}` }) + '\n');
      requests++;
    }
  }
  await new Promise((r) => setTimeout(r, 10));
}
sock?.destroy();
process.stdout.write(JSON.stringify({ requests, answers, identities: [...identities], connects }) + '\n');
