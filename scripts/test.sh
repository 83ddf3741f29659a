#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, builds, runs vitest, and prints
# "N passed, N failed" from the runner's JSON report as its last line.
set -uo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in iperf:iperf curl:curl nc:netcat-openbsd tcpdump:tcpdump ip:iproute2 gcc:gcc python3:python3 useradd:passwd setpriv:util-linux haproxy:haproxy wrk:wrk nginx:nginx socat:socat dnsmasq:dnsmasq-base; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  echo "installing test dependencies: ${need[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "the tests need root (network namespaces, seccomp supervisors)"; exit 1; fi
  # packages with a service (nginx, haproxy) must not start one on the host: a policy-rc.d that says no, for the
  # duration of the install, unless the machine already has one
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  rc=$?
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || exit 1
fi

[[ -d node_modules ]] || npm install || exit 1
[[ -f build/Release/appswitch.node && -f build/Release/appswitch-launcher ]] || npx node-gyp rebuild || exit 1
npx tsc -p tsconfig.json || exit 1

rm -f test-results.json
npx vitest run "$@"
status=$?
node -e '
  const fs = require("fs");
  let r;
  try { r = JSON.parse(fs.readFileSync("test-results.json", "utf8")); } catch { console.log("0 passed, 1 failed"); process.exit(0); }
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests + (r.numTotalTestSuites && !r.success && !r.numFailedTests ? 1 : 0)} failed`);
'
exit $status
