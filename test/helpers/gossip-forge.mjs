// Attack program for test/security/gossip-*.test.ts: sends forged SWIM datagrams built with appswitch's own codec
// (dist/src/gossip) to gossip ports. Runs as a plain process in a test namespace or under `appswitch run`.
//   node gossip-forge.mjs '{"targets":["192.0.2.2:7946"],"messages":[...],"rounds":10,"intervalMs":100,"key":"FILE"}'
// messages: {kind:'alive',node,addr,incarnation,epoch} | {kind:'kv',node,epoch,version,key,value:<JSON value>|null},
// each optionally with "to": [targets] (default: all targets).
// With "key" (a keyring file), packets are sealed with its first key (a member holding the cluster key); without,
// they are plaintext (anyone). Prints one JSON line: {"sent":N,"errors":[...]}.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { encodeMessage } = await import(path.join(root, 'dist/src/gossip/codec.js'));
const { finishEnvelope, writeReplayHeader, REPLAY_HEADER_BYTES } = await import(path.join(root, 'dist/src/gossip/envelope.js'));
const { Keyring } = await import(path.join(root, 'dist/src/gossip/crypto.js'));

const spec = JSON.parse(process.argv[2] ?? '{}');
let keyring;
if (spec.key) {
  const line = readFileSync(spec.key, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).find(Boolean);
  keyring = new Keyring([/^[0-9a-f]{64}$/i.test(line) ? Buffer.from(line, 'hex') : Buffer.from(line, 'base64')]);
}
const session = randomBytes(6).readUIntBE(0, 6);
let seq = 0;

function packet(msg) {
  const m = msg.kind === 'kv' ? { ...msg, value: msg.value === null ? null : Buffer.from(JSON.stringify(msg.value)) } : msg;
  const enc = encodeMessage(m);
  const body = new Uint8Array(REPLAY_HEADER_BYTES + enc.length);
  writeReplayHeader(body, { session, timestamp: Date.now(), seq: seq++ });
  body.set(enc, REPLAY_HEADER_BYTES);
  return finishEnvelope({ payload: body, compressed: false }, keyring, 0);
}

const sock = dgram.createSocket(spec.targets?.[0]?.includes('[') ? 'udp6' : 'udp4');
const errors = [];
let sent = 0;
const send = (buf, target) =>
  new Promise((resolve) => {
    const i = target.lastIndexOf(':');
    sock.send(buf, Number(target.slice(i + 1)), target.slice(0, i).replace(/^\[|\]$/g, ''), (e) => {
      if (e) errors.push(`${target}: ${e.code ?? e.message}`);
      else sent++;
      resolve();
    });
  });
for (let r = 0; r < (spec.rounds ?? 10); r++) {
  for (const msg of spec.messages ?? []) for (const t of msg.to ?? spec.targets ?? []) await send(packet(msg), t);
  await new Promise((res) => setTimeout(res, spec.intervalMs ?? 100));
}
sock.close();
process.stdout.write(JSON.stringify({ sent, errors: [...new Set(errors)] }) + '\n');
