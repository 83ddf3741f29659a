#!/bin/bash
# sk_lookup steering against native, in the kernel alone (no appswitch daemon): netns gw runs iperf (v2) and nginx,
# netns out is the client; ports 6201 and 9081 are steered by native/sklookup.c (through the addon) to the listeners
# of 5201 and 8081. Interleaved rounds; on a busy machine compare medians. Root, iperf, nginx, wrk, a built addon.
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
G=sklp-gw-$$; O=sklp-out-$$
cleanup() { kill $SP $IPF $NP 2>/dev/null || true; ip netns del $G 2>/dev/null || true; ip netns del $O 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ip netns add $G; ip netns add $O
ip link add sklpv0 netns $G type veth peer name sklpv1 netns $O
ip -n $G addr add 10.99.0.1/24 dev sklpv0; ip -n $O addr add 10.99.0.2/24 dev sklpv1
for n in $G $O; do ip -n $n link set lo up; done
ip -n $G link set sklpv0 up; ip -n $O link set sklpv1 up
ip netns exec $G iperf -s -p 5201 >/dev/null 2>&1 & IPF=$!
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon on; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 8081; location / { return 200 "ok\n"; } } }
NG
ip netns exec $G nginx -c "$W/nginx.conf"
sleep 1
NP=$(cat "$W/nginx.pid"); NW=$(pgrep -P "$NP" | head -1)
cat > "$W/steer.cjs" <<'JS'
const [,, addon, ns, ...args] = process.argv;
const a = require(addon);
const fs = require('fs');
const h = a.skLookupOpen('/run/netns/' + ns);
for (let i = 0; i < args.length; i += 3) {
  const [port, pid, inode] = args.slice(i, i + 3);
  const fd = fs.readdirSync(`/proc/${pid}/fd`).find((f) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${f}`) === `socket:[${inode}]`; } catch { return false; } });
  const d = a.pidGetFd(+pid, +fd); a.skLookupSet(h, +port, d); a.close(d);
}
setInterval(() => {}, 1e6);
JS
ino() { ip netns exec $G ss -Hltne "sport = :$1" | grep -o 'ino:[0-9]*' | head -1 | cut -d: -f2; }
node "$W/steer.cjs" "$ROOT/build/Release/appswitch.node" $G 6201 $IPF "$(ino 5201)" 9081 "$NW" "$(ino 8081)" & SP=$!
sleep 1
for round in 1 2 3 4 5; do
  for port in 5201 6201; do
    sleep 1
    echo "iperf port $port ($([ $port = 5201 ] && echo native || echo steered)): $(ip netns exec $O iperf -c 10.99.0.1 -p $port -t 4 -f g | grep -o '[0-9.]* Gbits/sec')"
  done
  for port in 8081 9081; do
    echo "wrk new connection per request, port $port ($([ $port = 8081 ] && echo native || echo steered)): $(ip netns exec $O wrk -t1 -c32 -d4s -H 'Connection: close' http://10.99.0.1:$port/ | grep -o 'Requests/sec: *[0-9.]*')"
  done
done
