// Sends one signed push message (daemon/peers.ts) to a daemon's peer API, as a member would: argv: key file, target
// address, peer port, then FROM TO CLIENT triples ("ip:port"). Run inside a test host's namespace (its source address
// is that host's). For the attack tests of test/integration/ingress-push.test.ts.
import { readKeyring } from '../../dist/src/daemon/gossip-key.js';
import { PeerApi } from '../../dist/src/daemon/peers.js';

const [keyFile, target, port, ...rest] = process.argv.slice(2);
const ep = (s) => {
  const i = s.lastIndexOf(':');
  return { ip: s.slice(0, i), port: Number(s.slice(i + 1)) };
};
const records = [];
for (let i = 0; i + 2 < rest.length; i += 3) records.push({ from: ep(rest[i]), to: ep(rest[i + 1]), client: ep(rest[i + 2]) });
const silent = { warn() {}, info() {}, error() {}, debug() {} };
const api = new PeerApi(Number(port), readKeyring(keyFile), async () => undefined, silent, () => true);
api.push(target, records);
// the line is written once the connection is up; a whoIs for nothing waits for the same connection, then we are done
await api.whoIs(target, '192.0.2.254:1', undefined, 1500);
await api.close();
console.log('pushed', records.length);
