/** The readiness probe for `ready: {http: PORT, path: P}`: run under appswitch in the project, it GETs its one
 * argument (http://NAME:PORT/PATH) and exits 0 on a 2xx or 3xx answer, 1 otherwise (the reason on stderr). */
import http from 'node:http';

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: probe-http URL\n');
  process.exit(2);
}
const req = http.get(url, { timeout: 4000 }, (res) => {
  res.resume();
  const code = res.statusCode ?? 0;
  if (code >= 200 && code < 400) process.exit(0);
  process.stderr.write(`GET ${url}: HTTP ${code}\n`);
  process.exit(1);
});
req.on('timeout', () => req.destroy(new Error('no answer within 4 s')));
req.on('error', (e) => {
  process.stderr.write(`GET ${url}: ${e.message}\n`);
  process.exit(1);
});
