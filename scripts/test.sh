#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, builds, runs vitest, and prints
# "N passed, N failed" from the runner's JSON report as its last line.
set -uo pipefail
cd "$(dirname "$0")/.."

# what:package — a command on the PATH, or an absolute path (a glob) for programs outside it. The second line is the
# compatibility suite's (test/integration/compat): real servers with their stock clients.
need=()
for pair in iperf:iperf curl:curl nc:netcat-openbsd tcpdump:tcpdump ip:iproute2 gcc:gcc python3:python3 useradd:passwd setpriv:util-linux haproxy:haproxy wrk:wrk nginx:nginx \
  redis-server:redis-server redis-cli:redis-tools apache2:apache2 lighttpd:lighttpd iperf3:iperf3 memcached:memcached mosquitto:mosquitto mosquitto_pub:mosquitto-clients mariadbd:mariadb-server mariadb:mariadb-client '/usr/lib/postgresql/*/bin/postgres:postgresql' psql:postgresql-client sshd:openssh-server ssh-keygen:openssh-client go:golang-go socat:socat dnsmasq:dnsmasq-base dig:bind9-dnsutils /usr/bin/python3:python3 runuser:util-linux chromium:chromium; do
  what=${pair%:*}
  if [[ $what == /* ]]; then compgen -G "$what" >/dev/null && continue; else command -v "$what" >/dev/null 2>&1 && continue; fi
  [[ " ${need[*]-} " == *" ${pair##*:} "* ]] || need+=("${pair##*:}")
done
if ((${#need[@]})); then
  echo "installing test dependencies: ${need[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "the tests need root (network namespaces, seccomp supervisors)"; exit 1; fi
  # packages with a service (nginx, haproxy, redis, postgresql, mariadb, ...) must not start one on the host: a policy-rc.d that says no, for the
  # duration of the install, unless the machine already has one
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  rc=$?
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || exit 1
fi

[[ -d node_modules ]] || npm install || exit 1
[[ -f build/Release/appswitch.node && -f build/Release/appswitch-launcher && -f build/Release/appswitch-relay ]] || npx node-gyp rebuild || exit 1
npx tsc -p tsconfig.json || exit 1
node dist/src/ui/build-page.js || exit 1 # the live view's page (dist/ui/page.html)
# the compatibility suite's static Go server (test/helpers/compat-go), built and cached before the tests so that
# none of them waits for Go's first build of its standard library; a failure here is reported by those tests
node -e 'import("./dist/test/helpers/compat.js").then((m) => m.buildGoServer())' || echo "building test/helpers/compat-go failed: the compat tests will fail and say why"

rm -f test-results.json test-results-unit.json test-results-security.json test-results-alone.json
if (($#)); then
  npx vitest run "$@"
  status=$?
  reports=(test-results.json)
else
  # Two lanes at once. Lane 1: the integration files, one after another (see vitest.config.ts). Lane 2, beside it:
  # the unit tests (pure modules, no namespaces, no daemons: files in parallel), then the security files, the
  # privilege tests (ops-privilege, run-as-user, private-daemon), the gateway files (ingress, egress, virtual services),
  # the bench smoke and the cluster file, one after another (several create system users: they never run at once,
  # useradd locks /etc/passwd; the cluster file is here to even out the lanes' lengths). Each run writes its own report; lane 2's
  # output follows lane 1's, whole. Then, alone: the tests that change host-wide state for a moment (a cgroup limit
  # every appswitch run on the machine shares), which would make the lanes' programs fail beside them.
  alone_tests=(test/security/cgroup-limit.test.ts)
  side_tests=(test/integration/ingress.test.ts test/integration/ingress-local.test.ts test/integration/ingress-preamble.test.ts test/integration/egress.test.ts test/integration/vservice.test.ts test/integration/bench-smoke.test.ts test/integration/cluster.test.ts)
  side_excludes=()
  for f in "${side_tests[@]}"; do side_excludes+=(--exclude "$f"); done
  side_log=$(mktemp)
  (
    npx vitest run test/unit --fileParallelism --outputFile.json=test-results-unit.json
    u=$?
    npx vitest run test/security test/integration/ops-privilege.test.ts test/integration/run-as-user.test.ts test/integration/private-daemon.test.ts "${side_tests[@]}" --exclude "${alone_tests[0]}" --outputFile.json=test-results-security.json
    s=$?
    ((u == 0)) && exit $s
    exit $u
  ) >"$side_log" 2>&1 &
  side_pid=$!
  npx vitest run --exclude 'test/unit/**' --exclude 'test/security/**' --exclude 'test/integration/ops-privilege.test.ts' --exclude 'test/integration/run-as-user.test.ts' --exclude 'test/integration/private-daemon.test.ts' "${side_excludes[@]}"
  status=$?
  wait "$side_pid"
  side_status=$?
  echo "---- unit and security tests (run beside the others) ----"
  cat "$side_log"
  rm -f "$side_log"
  ((status == 0)) && status=$side_status
  echo "---- alone: tests that change host-wide state ----"
  npx vitest run "${alone_tests[@]}" --outputFile.json=test-results-alone.json
  alone_status=$?
  ((status == 0)) && status=$alone_status
  reports=(test-results.json test-results-unit.json test-results-security.json test-results-alone.json)
fi
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0;
  for (const f of process.argv.slice(1)) {
    let r;
    try { r = JSON.parse(fs.readFileSync(f, "utf8")); } catch { failed += 1; continue; } /* no report: that run failed */
    passed += r.numPassedTests;
    failed += r.numFailedTests + (r.numTotalTestSuites && !r.success && !r.numFailedTests ? 1 : 0);
  }
  console.log(`${passed} passed, ${failed} failed`);
' "${reports[@]}"
exit $status
