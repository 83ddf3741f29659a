// Opens a TCP connection to an instance's real endpoint and writes an ingress preamble (native/preamble.h) first, as a
// gateway's relay does, then an HTTP GET; prints what came back ("closed" when nothing did). For the attack tests of
// test/integration/ingress-push.test.ts. argv: key (a cluster key file, whose preamble key is derived as a daemon
// derives it, or "wrong" for a key nobody has), target ip:port, local port, the client it claims to be (ip:port),
// and optionally the "from" endpoint the MAC names (default: this connection's own local end; another one replays a
// preamble onto a connection it was not made for). Run inside a test host's namespace.
import net from 'node:net';
import { readKeyring } from '../../dist/src/daemon/gossip-key.js';
import { preambleKeys } from '../../dist/src/gateway/preamble-key.js';
import { native } from '../../dist/src/native/binding.js';
import { ip16 } from '../../dist/src/trap/decision-table.js';

const [keyArg, target, localPort, claimed, macFrom] = process.argv.slice(2);
const ep = (s) => {
  const i = s.lastIndexOf(':');
  return { ip: s.slice(0, i), port: Number(s.slice(i + 1)) };
};
const to = ep(target);
const client = ep(claimed);
const key = keyArg === 'wrong' ? Buffer.alloc(16, 7) : preambleKeys(readKeyring(keyArg))[0];
const sock = net.connect({ host: to.ip, port: to.port, localPort: Number(localPort) });
let got = '';
sock.on('connect', () => {
  const from = macFrom ? ep(macFrom) : { ip: sock.localAddress, port: sock.localPort };
  sock.write(native.preambleMake(key, ip16(client.ip), client.port, ip16(from.ip), from.port, ip16(to.ip), to.port, Date.now()));
  sock.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n');
});
sock.on('data', (d) => (got += d.toString()));
sock.on('error', () => undefined);
sock.on('close', () => {
  console.log(got ? got : 'closed');
  process.exit(0);
});
setTimeout(() => {
  console.log(got ? got : 'no answer');
  process.exit(0);
}, 8000);
