// Attack program for test/security/gossip-member.test.ts: a member that HOLDS the cluster key (without "key": a
// member of a plaintext cluster) (a real Memberlist
// from dist/src/gossip) and publishes whatever it is told, valid or not.
//   node gossip-rogue.mjs '{"bind":"192.0.2.3","join":"192.0.2.1:7946","key":"FILE","name":"rogue","first":{KEY:VALUE},"then":{KEY:VALUE}}'
// Publishes `first`, prints "first", waits for a line on stdin, publishes `then`, prints "then", and stays a member
// until stdin closes. Values are JSON values (published as their JSON text).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { Memberlist, UdpTransport } = await import(path.join(root, 'dist/src/gossip/index.js'));
const spec = JSON.parse(process.argv[2] ?? '{}');
const keyring = [];
if (spec.key) {
  const line = readFileSync(spec.key, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).find(Boolean);
  keyring.push(/^[0-9a-f]{64}$/i.test(line) ? Buffer.from(line, 'hex') : Buffer.from(line, 'base64'));
}
const transport = await UdpTransport.create({ bindAddress: spec.bind, port: 7946, advertiseAddress: `${spec.bind}:7946` });
const ml = new Memberlist({ name: spec.name, transport, ...(keyring.length ? { keyring } : {}), profile: 'lan' });
await ml.join([spec.join], { maxAttempts: 20 });
for (const [k, v] of Object.entries(spec.first ?? {})) ml.setLocal(k, JSON.stringify(v));
process.stdout.write('first\n');
const rl = readline.createInterface({ input: process.stdin });
let step = 0;
rl.on('line', () => {
  if (step++ > 0) return;
  for (const [k, v] of Object.entries(spec.then ?? {})) ml.setLocal(k, JSON.stringify(v));
  process.stdout.write('then\n');
});
rl.on('close', async () => {
  await ml.leave().catch(() => {});
  ml.shutdown();
  transport.close();
  process.exit(0);
});
