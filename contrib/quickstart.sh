#!/usr/bin/env bash
# Build Pigeon from this source tree and run it on localhost with a
# self-signed certificate and a demo account.  Made for a fresh Debian 12
# machine; safe to run again (it only does what is missing, and always
# prints a password that works).
#
#   contrib/quickstart.sh             prepare, then run pigeond in the foreground
#   contrib/quickstart.sh --no-start  prepare only
#
# Everything it creates is under ./run/ (ignored by git).
set -euo pipefail

usage() {
	sed -n '2,10s/^# \{0,1\}//p' "$0"
}

start=1
for arg in "$@"; do
	case "$arg" in
	--no-start) start=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "quickstart: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
	esac
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$src"
if [ ! -f configure.ac ] || [ ! -f src/ctl/pigeonctl.c ]; then
	die "run me from a Pigeon source tree ($src does not look like one)"
fi

# ---- build dependencies -------------------------------------------------
# What the server build needs (libstrophe is for the tests only).
deps=(build-essential autoconf automake libtool pkg-config libevent-dev
	libexpat1-dev libssl-dev libpq-dev libsodium-dev libidn11-dev
	libyaml-dev libsqlite3-dev check openssl)

if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
	missing=()
	for p in "${deps[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		say "installing ${missing[*]}"
		if [ "$(id -u)" -eq 0 ]; then
			sudo=()
		elif command -v sudo >/dev/null; then
			sudo=(sudo)
		else
			die "missing packages (${missing[*]}) and no sudo: install them as root"
		fi
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
else
	say "not a Debian system: make sure these are installed: ${deps[*]}"
fi

# ---- build ----------------------------------------------------------------
if [ ! -x configure ] || [ configure.ac -nt configure ] ||
	[ Makefile.am -nt configure ]; then
	say "./autogen.sh"
	./autogen.sh
fi
# Out of tree, in _build/ (the same place tests/run-all.sh builds), so that
# the source tree stays clean for both.
if [ -f config.status ]; then
	die "the source tree is configured in-tree: run 'make distclean' first"
fi
build="$src/_build"
mkdir -p "$build"
if [ ! -f "$build/Makefile" ] || [ ! -f "$build/config.status" ] ||
	[ configure -nt "$build/config.status" ]; then
	say "configure (in _build/)"
	(cd "$build" && "$src/configure")
fi
say "make -j$(nproc) (in _build/)"
make -C "$build" -j"$(nproc)"

# ---- run directory: certificate, config ----------------------------------
run="$src/run"
mkdir -p "$run/certs"
chmod 0700 "$run"

pem="$run/certs/localhost.pem"
if [ ! -s "$pem" ]; then
	say "creating a self-signed certificate for localhost"
	tmp=$(mktemp -d "$run/certs/tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-nodes -days 825 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost \
		-keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
	(umask 077 && cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/localhost.pem")
	chmod 0600 "$tmp/localhost.pem"
	mv "$tmp/localhost.pem" "$pem"
	rm -rf "$tmp"
	trap - EXIT
fi

cfg="$run/pigeon.yml"
if [ ! -f "$cfg" ]; then
	say "writing $cfg"
	# Paths are relative to run/, so the tree can be moved.
	cat >"$cfg" <<'EOF'
# Written by contrib/quickstart.sh for a local test server; delete this
# file to have it written again.  See pigeon.yml(5).
hosts:
  - localhost

listen:
  - port: 5222
    ip: "127.0.0.1"
    module: c2s
    starttls_required: true
  - port: 5223
    ip: "127.0.0.1"
    module: c2s_tls

certfiles:
  - "certs/localhost.pem"

storage:
  driver: sqlite
  path: "pigeon.db"

modules:
  mod_disco: {}
  mod_ping: {}
  mod_version: {}
  mod_roster: {}
  mod_offline: {}
  mod_blocking: {}
  mod_last: {}
  mod_vcard: {}
  mod_private: {}
  mod_caps: {}
  mod_register: {}
  mod_carbons: {}
  mod_mam: {}
  mod_csi: {}
  mod_push: {}
  mod_pep: {}

log:
  level: info

ctl_socket: "pigeon.sock"
# The build tree, not an installed copy.
module_path: "../_build/modules/.libs"
schema_dir: "../schemas"
EOF
else
	say "keeping the existing $cfg"
fi

# ---- demo account ----------------------------------------------------------
ctl=("$build/pigeonctl" -c "$cfg")
running=0
if "${ctl[@]}" status >/dev/null 2>&1; then
	running=1
fi

password=$(openssl rand -hex 8)
users=$("${ctl[@]}" registered_users localhost) ||
	die "cannot list the accounts of localhost (see the message above)"
if grep -qx demo <<<"$users"; then
	# The old password is not known (only SCRAM keys are stored): set a
	# new one so that the one printed below is right.
	say "demo@localhost exists: giving it a new password"
	"${ctl[@]}" change_password demo localhost "$password" >/dev/null
else
	say "registering demo@localhost"
	"${ctl[@]}" register demo localhost "$password" >/dev/null
fi

cat <<EOF

  Pigeon is ready on localhost (config: run/pigeon.yml).

  Account:   demo@localhost
  Password:  $password
  Ports:     5222 (STARTTLS), 5223 (direct TLS), on 127.0.0.1 only

  Connect with profanity (apt-get install profanity):
      profanity
      /connect demo@localhost
      /tls allow           (accept the self-signed certificate)
  or with Gajim/Dino: server 127.0.0.1, port 5222, trust the certificate.

  More accounts:  _build/pigeonctl -c run/pigeon.yml register alice localhost PASSWORD
  Stop:           Ctrl-C, or _build/pigeonctl -c run/pigeon.yml stop

EOF

if [ "$running" -eq 1 ]; then
	say "pigeond is already running (_build/pigeonctl -c run/pigeon.yml status)"
	exit 0
fi
if [ "$start" -eq 0 ]; then
	say "not starting (--no-start): _build/pigeond -c run/pigeon.yml"
	exit 0
fi
say "starting pigeond"
exec "$build/pigeond" -c "$cfg"
