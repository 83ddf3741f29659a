// The shop's web service: GET / asks the api (by name) for the items and counts the visit in the cache (redis).
// Node built-ins only. GET / -> {"visits": N, "api_instance": "...", "items": [...]}; GET /health -> 200 "ok".
// A failure of the api or the cache answers 502 with a message naming which one failed. One log line per request.
import http from 'node:http';
import net from 'node:net';

const PORT = Number(process.env.PORT || 8080);
const API_URL = process.env.API_URL || 'http://api:8080/items';
const CACHE_HOST = process.env.CACHE_HOST || 'cache';
const CACHE_PORT = Number(process.env.CACHE_PORT || 6379);
// longer than a name lookup that falls through to an unreachable upstream resolver (2 s per try), so that a service
// that is down shows as a name that does not resolve rather than as a timeout
const TIMEOUT_MS = 5000;

/** The message of a failed call: a name that does not resolve says so in words (the service is down, or misnamed). */
function why(e) {
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return `the name ${e.hostname ?? ''} does not resolve (is the service up?): ${e.code}`;
  return e.message;
}

/** GETs url and resolves with its parsed JSON body; rejects on a network error, a non-200 answer or bad JSON. */
function getJson(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error('the answer is not JSON'));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/** Sends one redis command (RESP array of bulk strings) on a fresh connection; resolves with an integer reply.
 * The reply is judged when the connection closes: a server that refuses (redis' protected mode writes an error and
 * hangs up) may make our write fail with EPIPE first, and its own message is the one worth showing. */
function redisInteger(...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: CACHE_HOST, port: CACHE_PORT });
    let reply = '';
    let failure = null;
    sock.setEncoding('utf8');
    sock.setTimeout(TIMEOUT_MS, () => sock.destroy(new Error(`no answer in ${TIMEOUT_MS} ms`)));
    sock.on('connect', () => {
      sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''));
    });
    sock.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) sock.end(); // one reply line is all we wait for
    });
    sock.on('error', (e) => (failure = e));
    sock.on('close', () => {
      const end = reply.indexOf('\r\n');
      const line = end < 0 ? '' : reply.slice(0, end);
      if (line[0] === ':') resolve(Number(line.slice(1)));
      else if (line[0] === '-') reject(new Error(`redis: ${line.slice(1)}`));
      else if (line) reject(new Error(`redis: unexpected reply ${JSON.stringify(line.slice(0, 80))}`));
      else reject(failure ?? new Error('the connection closed before a reply'));
    });
  });
}

function send(res, status, body) {
  const text = typeof body === 'string' ? body : JSON.stringify(body) + '\n';
  res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json' });
  res.end(text);
}

async function home(res) {
  const [api, visits] = await Promise.allSettled([getJson(API_URL), redisInteger('INCR', 'visits')]);
  const failed = [];
  if (api.status === 'rejected') failed.push(`api (${API_URL}): ${why(api.reason)}`);
  if (visits.status === 'rejected') failed.push(`cache (${CACHE_HOST}:${CACHE_PORT}): ${why(visits.reason)}`);
  if (failed.length) {
    res.problem = failed.join('; ');
    return send(res, 502, { error: res.problem });
  }
  send(res, 200, { visits: visits.value, api_instance: api.value.instance, items: api.value.items });
}

const server = http.createServer((req, res) => {
  const peer = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
  res.on('finish', () => console.log(`${peer} ${req.method} ${req.url} ${res.statusCode}${res.problem ? ` ${res.problem}` : ''}`));
  if (req.method === 'GET' && req.url === '/health') return send(res, 200, 'ok\n');
  if (req.method === 'GET' && req.url === '/') {
    return home(res).catch((e) => send(res, 500, { error: String(e) }));
  }
  send(res, 404, 'not found\n');
});

server.listen(PORT, () => console.log(`web listening on :${PORT}`));

// SIGTERM (appswitch stop/down) and Ctrl-C: stop taking connections, then exit 0
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    console.log(`web stopping (${sig})`);
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
