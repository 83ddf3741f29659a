#!/usr/bin/env bash
# Installs appswitch from this (built) checkout: idempotent, as root. Run it again after `git pull && npm install`
# to upgrade; a run that changes nothing says so.
#
#   sudo scripts/install.sh            # then: systemctl start appswitch (when systemd runs), appswitch status
#
# What it does, each step only when needed:
#   1. copies the built package (package.json, bin/, dist/src/, the addon and the launcher, production
#      node_modules) to $LIBDIR (/opt/appswitch), owned by root, and links $PREFIX/bin/appswitch to it;
#   2. creates the `appswitch` system group (members may use the daemon's sockets), and makes the installed launcher
#      setuid root, owned root:appswitch, mode 4750: only root and the group's members can execute it, and a member
#      runs programs as itself through it (docs/security.md, "Running as yourself");
#   3. installs scripts/appswitch.service to $UNITDIR, and, only when systemd is PID 1, runs
#      `systemctl daemon-reload` and `systemctl enable appswitch`;
#   4. creates the cluster key $SYSCONFDIR/appswitch/gossip.key (32 random bytes, base64, mode 0600) only if there
#      is none — in /etc, not in the state dir /run/appswitch, which is a tmpfs (a key there changes at reboot).
#      Every node of a cluster needs the SAME key: copy the first node's file to the others;
#   5. writes a default $SYSCONFDIR/appswitch/config.yaml naming that key, only if there is none (an operator's
#      file is kept).
#
# Why a copy under /opt and not `npm install -g .`: `npm install -g <directory>` only links the checkout
# (whoever can write to it then changes what root runs, and moving it breaks the install), and installing a
# packed tarball would rebuild the addon and recompile TypeScript, which needs node-gyp, a compiler and the dev
# dependencies on every host. The copy holds exactly what runs, is root-owned, and needs nothing at install time.
#
# For packaging and tests, everything lands under $DESTDIR (default: /); paths written into the unit and the
# link are the final ones, without $DESTDIR. With DESTDIR set, systemctl is never run, and the group goes into
# $DESTDIR/etc/group (groupadd --prefix).
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-/opt/appswitch}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
GROUP=${GROUP:-appswitch}

SRC=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it writes $LIBDIR, $PREFIX/bin, $SYSCONFDIR and $UNITDIR)"
for f in package.json bin/appswitch.js dist/src/cli/main.js build/Release/appswitch.node build/Release/appswitch-launcher; do
  [[ -e $SRC/$f ]] || die "$SRC/$f is missing: build the checkout first (npm install)"
done
command -v node >/dev/null || die "node is not on PATH (appswitch needs Node.js >= 20)"

# ---- 1. the package --------------------------------------------------------------------------------------------
target=$DESTDIR$LIBDIR
stage=$(mktemp -d "${TMPDIR:-/tmp}/appswitch-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pkg/build/Release" "$stage/pkg/dist" "$stage/pkg/scripts"
cp -a "$SRC/package.json" "$SRC/binding.gyp" "$SRC/bin" "$stage/pkg/"
for f in README.md LICENSE CHANGELOG.md; do [[ -e $SRC/$f ]] && cp -a "$SRC/$f" "$stage/pkg/"; done
cp -a "$SRC/dist/src" "$stage/pkg/dist/"
cp -a "$SRC/build/Release/appswitch.node" "$SRC/build/Release/appswitch-launcher" "$stage/pkg/build/Release/"
cp -a "$SRC/scripts/appswitch.service" "$stage/pkg/scripts/"
# production dependencies only (npm ls reads the installed tree; nothing is fetched)
(cd "$SRC" && npm ls --omit=dev --all --parseable 2>/dev/null || true) | while read -r dir; do
  [[ $dir == "$SRC" || -z $dir ]] && continue
  rel=${dir#"$SRC"/}
  mkdir -p "$stage/pkg/$(dirname "$rel")"
  cp -a "$dir" "$stage/pkg/$(dirname "$rel")/"
done
[[ -d $stage/pkg/node_modules/commander ]] || die "could not collect the production dependencies (npm ls failed?)"
chown -R 0:0 "$stage/pkg"
chmod -R u+rwX,go+rX,go-w "$stage/pkg"

if [[ -d $target ]] && diff -r -q --no-dereference "$stage/pkg" "$target" >/dev/null 2>&1; then
  say "package: $LIBDIR is up to date"
else
  mkdir -p "$(dirname "$target")"
  rm -rf "$target.new" "$target.old"
  cp -a "$stage/pkg" "$target.new"
  [[ -e $target ]] && mv "$target" "$target.old"
  mv "$target.new" "$target"
  rm -rf "$target.old"
  say "package: installed $(node -p "require('$target/package.json').version") to $LIBDIR"
fi

link=$DESTDIR$PREFIX/bin/appswitch
mkdir -p "$(dirname "$link")"
if [[ $(readlink "$link" 2>/dev/null || true) == "$LIBDIR/bin/appswitch.js" ]]; then
  say "command: $PREFIX/bin/appswitch is in place"
else
  ln -sfn "$LIBDIR/bin/appswitch.js" "$link"
  say "command: $PREFIX/bin/appswitch -> $LIBDIR/bin/appswitch.js"
fi

# ---- 2. the group ------------------------------------------------------------------------------------------------
if [[ -n $DESTDIR ]]; then
  mkdir -p "$DESTDIR/etc"
  for f in group gshadow passwd shadow; do [[ -e $DESTDIR/etc/$f ]] || : >"$DESTDIR/etc/$f"; done
  if grep -q "^$GROUP:" "$DESTDIR/etc/group"; then say "group: $GROUP exists"; else groupadd --prefix "$DESTDIR" --system "$GROUP" && say "group: created $GROUP"; fi
elif getent group "$GROUP" >/dev/null; then
  say "group: $GROUP exists"
else
  groupadd --system "$GROUP"
  say "group: created $GROUP (add operators with: usermod -aG $GROUP USER)"
fi

# the launcher: setuid root, executable by root and the group only (4750); chown first, it clears the setuid bit
launcher=$target/build/Release/appswitch-launcher
if [[ -n $DESTDIR ]]; then
  gid=$(awk -F: -v g="$GROUP" '$1 == g { print $3 }' "$DESTDIR/etc/group")
else
  gid=$(getent group "$GROUP" | cut -d: -f3)
fi
[[ -n $gid ]] || die "group $GROUP has no gid"
if [[ $(stat -c '%u:%g %a' "$launcher") == "0:$gid 4750" ]]; then
  say "launcher: $LIBDIR/build/Release/appswitch-launcher is setuid root, root:$GROUP 4750"
else
  chown "0:$gid" "$launcher"
  chmod 4750 "$launcher"
  say "launcher: $LIBDIR/build/Release/appswitch-launcher made setuid root, root:$GROUP 4750 (members of $GROUP run programs as themselves)"
fi
if findmnt -n -o OPTIONS -T "$launcher" 2>/dev/null | grep -qw nosuid; then
  say "launcher: WARNING: $LIBDIR is on a nosuid mount: members of $GROUP cannot run programs (root still can); install to another LIBDIR"
fi

# ---- 3. the unit -------------------------------------------------------------------------------------------------
unit=$DESTDIR$UNITDIR/appswitch.service
mkdir -p "$(dirname "$unit")"
sed -e "s#/usr/local/bin/appswitch#$PREFIX/bin/appswitch#g" -e "s#/etc/appswitch/#$SYSCONFDIR/appswitch/#g" \
  "$SRC/scripts/appswitch.service" >"$stage/appswitch.service"
if cmp -s "$stage/appswitch.service" "$unit"; then
  say "unit: $UNITDIR/appswitch.service is up to date"
  unit_changed=0
else
  install -m 0644 "$stage/appswitch.service" "$unit"
  say "unit: installed $UNITDIR/appswitch.service"
  unit_changed=1
fi
if [[ -z $DESTDIR && -d /run/systemd/system ]]; then
  ((unit_changed)) && systemctl daemon-reload
  if systemctl is-enabled --quiet appswitch.service 2>/dev/null; then
    say "systemd: appswitch.service is enabled"
  else
    systemctl enable appswitch.service
    say "systemd: enabled appswitch.service (start it: systemctl start appswitch)"
  fi
elif [[ -n $DESTDIR ]]; then
  say "systemd: DESTDIR is set: systemctl not run"
else
  say "systemd: not PID 1 on this machine (no /run/systemd/system): unit installed but not reloaded or enabled; start the daemon another way, e.g. $PREFIX/bin/appswitch daemon --config $SYSCONFDIR/appswitch/config.yaml"
fi

# ---- 4. the cluster key ------------------------------------------------------------------------------------------
key=$DESTDIR$SYSCONFDIR/appswitch/gossip.key
if [[ -e $key ]]; then
  say "key: $SYSCONFDIR/appswitch/gossip.key exists (kept)"
else
  mkdir -p "$(dirname "$key")"
  keytmp=$(mktemp "$(dirname "$key")/.gossip.key.XXXXXX") # mode 0600
  { echo '# appswitch cluster key (gossip and peer API): the same file on every node; keep it secret'
    head -c 32 /dev/urandom | base64 -w0
    echo; } >"$keytmp"
  chmod 0600 "$keytmp"
  # link(2) never replaces a file: a key that appeared meanwhile is kept
  if ln "$keytmp" "$key" 2>/dev/null; then
    say "key: generated $SYSCONFDIR/appswitch/gossip.key (0600); every other node of the cluster needs a copy of this same file"
  else
    say "key: $SYSCONFDIR/appswitch/gossip.key exists (kept)"
  fi
  rm -f "$keytmp"
fi

# ---- 5. the default config ---------------------------------------------------------------------------------------
conf=$DESTDIR$SYSCONFDIR/appswitch/config.yaml
if [[ -e $conf ]]; then
  say "config: $SYSCONFDIR/appswitch/config.yaml exists (kept)"
  grep -q '^[[:space:]]*gossip-key:' "$conf" ||
    say "config: it names no gossip-key: the daemon uses STATE-DIR/gossip.key; add 'gossip-key: $SYSCONFDIR/appswitch/gossip.key'"
else
  mkdir -p "$(dirname "$conf")"
  sed "s#@KEY@#$SYSCONFDIR/appswitch/gossip.key#" >"$conf" <<'EOF'
# appswitch daemon configuration: keys are the long flags of `appswitch daemon` (see `appswitch daemon --help`
# and README, "Operations"); a flag given on the command line overrides the key here.
# Uncomment and edit what you need; an unknown key or a bad value stops the daemon with FILE:LINE: KEY: why.

# node-address: 192.0.2.10        # host address that real server sockets bind to (default: first non-loopback)
# node-name: host-a               # unique in the cluster; default: HOSTNAME-NODEADDRESS
# vip-cidr:                       # virtual IP ranges (names, never destinations)
#   - 10.0.0.0/8
# ports: 40000-60000              # host port pool for servers under appswitch
# join:                           # cluster members to join
#   - 192.0.2.11
gossip-key: @KEY@                 # the cluster key: the same file on every node (appswitch keygen makes one)
# gossip-plaintext: false         # true: gossip and peer API WITHOUT authentication (warns at start)
# dns-port: 53
# fastpath: true
log-level: info
EOF
  chmod 0644 "$conf"
  say "config: wrote a default $SYSCONFDIR/appswitch/config.yaml"
fi
