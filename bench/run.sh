#!/bin/bash
# Runs one pigeon-load scenario against Pigeon, Prosody and ejabberd (each
# that is installed), one after the other, each freshly started on its own
# loopback ports, and prints the figures side by side with the ratios to
# Pigeon.  See doc/performance.md.
#
#   bench/run.sh provision N            create accounts load1..loadN on each
#   bench/run.sh SCENARIO [ARGS...]     ARGS go to pigeon-load unchanged
#   bench/run.sh stop                   stop what a killed run left behind
#
# Environment:
#   BENCH_DIR      state: configs, stores, logs, results (/tmp/pigeon-bench)
#   BENCH_SERVERS  which servers, in order ("pigeon prosody ejabberd")
#   BENCH_RT       a SCHED_FIFO priority (e.g. 10) for the server and the
#                  tool: other work on the machine then no longer preempts
#                  them mid-run (the kernel still keeps 5 % of each core
#                  for everything else); latency runs on a shared machine
#   BENCH_PIN      1: server on CPU 0, pigeon-load on CPU 1 (default when
#                  there are two CPUs or more); 0: no pinning
#   PIGEON_BUILDDIR  the build tree (pigeond, bench/pigeon-load); default
#                  _build of this source tree
#   BENCH_PGSQL    libpq conninfo of an existing database: Pigeon stores
#                  in PostgreSQL there instead of SQLite (its state, keys
#                  and account count then live in $BENCH_DIR/pigeon-pgsql)
#   BENCH_CERT     the certificate's key: ec (P-256, default) or rsa
#                  (RSA-2048); one per kind in $BENCH_DIR/certs/KIND
#   BENCH_PORT     Pigeon's STARTTLS port (25222); direct TLS is +1,
#                  Prosody +100, ejabberd +200.  All must lie outside the
#                  kernel's ephemeral range (ip_local_port_range), where
#                  the tool's own connections could take them first
#
# Examples:
#   bench/run.sh provision 5000
#   bench/run.sh idle -n 5000 --concurrency 100
#   bench/run.sh chat --pairs 100 --msg-rate 10000 --duration 10
#   bench/run.sh login -n 20000 --users 5000 --concurrency 50
#   bench/run.sh offline -n 50000 --senders 10 --users 1000 --first 4000
#   BENCH_SERVERS=pigeon bench/run.sh pep -n 2000 --contacts 100 --window 1
#   BENCH_SERVERS=pigeon bench/run.sh pepset -n 10000 --concurrency 50
set -u

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/.." && pwd)
builddir=${PIGEON_BUILDDIR:-$srcdir/_build}
builddir=$(cd "$builddir" 2>/dev/null && pwd) || {
	echo "run.sh: no build tree at ${PIGEON_BUILDDIR:-$srcdir/_build}" >&2
	exit 2
}
LOAD=$builddir/bench/pigeon-load
BENCH_DIR=${BENCH_DIR:-/tmp/pigeon-bench}
SERVERS=${BENCH_SERVERS:-pigeon prosody ejabberd}
BENCH_PGSQL=${BENCH_PGSQL:-}
BENCH_CERT=${BENCH_CERT:-ec}
PASSWORD=load-pass
NODE=pigeonbench@localhost

BENCH_RT=${BENCH_RT:-}
if [ -z "${BENCH_PIN:-}" ]; then
	if [ "$(nproc)" -ge 2 ]; then BENCH_PIN=1; else BENCH_PIN=0; fi
fi

die() { echo "run.sh: $*" >&2; exit 1; }
note() { echo "run.sh: $*" >&2; }

# Ports per server: STARTTLS and direct TLS.  Below Linux's default
# ephemeral range (32768-60999): thousands of client connections take
# ports from that range, and a server started after them could not bind.
BENCH_PORT=${BENCH_PORT:-25222}
c2s_port() {
	case $1 in
	pigeon) echo "$BENCH_PORT" ;;
	prosody) echo $((BENCH_PORT + 100)) ;;
	ejabberd) echo $((BENCH_PORT + 200)) ;;
	esac
}
tls_port() { echo $(($(c2s_port "$1") + 1)); }

# Refuses ports inside the ephemeral range actually configured.
check_ports() {
	local range lo hi p
	range=/proc/sys/net/ipv4/ip_local_port_range
	[ -r "$range" ] || return 0
	read -r lo hi <"$range" || return 0
	for p in "$BENCH_PORT" $((BENCH_PORT + 201)); do
		if [ "$p" -ge "$lo" ] && [ "$p" -le "$hi" ]; then
			die "BENCH_PORT=$BENCH_PORT: ports $BENCH_PORT-$((BENCH_PORT + 201)) overlap the ephemeral range $lo-$hi ($range)"
		fi
	done
	if [ "$BENCH_PORT" -lt "$lo" ] && [ $((BENCH_PORT + 201)) -gt "$hi" ]; then
		die "BENCH_PORT=$BENCH_PORT: ports overlap the ephemeral range $lo-$hi"
	fi
}
check_ports

installed() {
	case $1 in
	pigeon) [ -x "$builddir/pigeond" ] ;;
	prosody) command -v prosody >/dev/null ;;
	ejabberd) command -v ejabberdctl >/dev/null ;;
	*) return 1 ;;
	esac
}

version() {
	case $1 in
	pigeon) "$builddir/pigeond" -V 2>/dev/null | head -1 || echo pigeon ;;
	prosody) dpkg-query -W -f='prosody ${Version}' prosody 2>/dev/null || echo prosody ;;
	ejabberd) dpkg-query -W -f='ejabberd ${Version}' ejabberd 2>/dev/null || echo ejabberd ;;
	esac
}

# A server's state directory: configuration, store, logs, key cache and
# the number of accounts provisioned.  Pigeon on PostgreSQL has its own
# (its accounts are in another store).
sdir() {
	if [ "$1" = pigeon ] && [ -n "$BENCH_PGSQL" ]; then
		echo "$BENCH_DIR/pigeon-pgsql"
	else
		echo "$BENCH_DIR/$1"
	fi
}

CERT_DIR=$BENCH_DIR/certs/$BENCH_CERT

# One self-signed certificate for localhost, shared by the three: ECDSA
# P-256 or RSA-2048 (BENCH_CERT).  The key type decides much of what a
# TLS handshake costs the server (doc/performance.md).
make_cert() {
	local d=$CERT_DIR newkey
	[ -s "$d/localhost.pem" ] && return 0
	case $BENCH_CERT in
	ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
	rsa) newkey=(-newkey rsa:2048) ;;
	*) die "BENCH_CERT must be ec or rsa" ;;
	esac
	mkdir -p "$d" || return 1
	openssl req -x509 "${newkey[@]}" \
		-nodes -days 365 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost \
		-keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null || return 1
	cat "$d/cert.pem" "$d/key.pem" >"$d/localhost.pem"
	chmod 644 "$d/cert.pem" "$d/key.pem" "$d/localhost.pem"
}

# Pigeon's storage section: SQLite in its directory, or BENCH_PGSQL.
pigeon_storage() {
	if [ -n "$BENCH_PGSQL" ]; then
		printf '  driver: pgsql\n  conninfo: "%s"\n' "$BENCH_PGSQL"
	else
		printf '  driver: sqlite\n  path: "%s/pigeon.db"\n' "$(sdir pigeon)"
	fi
}

# Fills a template of bench/configs into the server's directory
# (@STORAGE@ stands alone on its line: Pigeon's storage section).
fill() {
	local srv=$1 src=$2 dst=$3 d
	d=$(sdir "$1")
	sed -e "s|@DIR@|$d|g" -e "s|@C2S_PORT@|$(c2s_port "$srv")|g" \
		-e "s|@TLS_PORT@|$(tls_port "$srv")|g" \
		-e "s|@PEM@|$CERT_DIR/localhost.pem|g" \
		-e "s|@CERT@|$CERT_DIR/cert.pem|g" \
		-e "s|@KEY@|$CERT_DIR/key.pem|g" \
		-e "s|@NODE@|$NODE|g" \
		-e "s|@MODULE_PATH@|$builddir/modules/.libs|g" \
		-e "s|@SCHEMA_DIR@|$srcdir/schemas|g" \
		"$here/configs/$src" | while IFS= read -r line; do
		if [ "$line" = "@STORAGE@" ]; then
			pigeon_storage
		elif [ "$line" = "@PEP_MODULES@" ]; then
			case ${scenario:-} in
			pep | pepset) printf '  mod_caps: {}\n  mod_pep: {}\n' ;;
			esac
		else
			printf '%s\n' "$line"
		fi
	done >"$dst"
}

wait_port() {
	local port=$1 pid=$2 i
	for i in $(seq 1 600); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# The running epmd, if any.  A stopped one may linger as a zombie where
# nothing reaps orphans (containers): it does not count.
live_epmd() {
	ps -C epmd -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ { print $1; exit }'
}

SERVER_PID=
EPMD_PID=
STARTER_PID=

# Starts a fresh server process (the store is kept: accounts).
start_server() {
	local srv=$1 d had_epmd=
	d=$(sdir "$1")
	mkdir -p "$d" || return 1
	make_cert || die "cannot make a certificate"
	SERVER_PID= EPMD_PID= STARTER_PID=
	case $srv in
	pigeon)
		fill pigeon pigeon.yml "$d/pigeon.yml"
		ulimit -n "$(ulimit -Hn)" 2>/dev/null
		"$builddir/pigeond" -c "$d/pigeon.yml" >>"$d/pigeond.log" 2>&1 &
		SERVER_PID=$!
		STARTER_PID=$SERVER_PID
		;;
	prosody)
		mkdir -p "$d/data"
		fill prosody prosody.cfg.lua "$d/prosody.cfg.lua"
		ulimit -n "$(ulimit -Hn)" 2>/dev/null
		prosody --config "$d/prosody.cfg.lua" -F >>"$d/stdout.log" 2>&1 &
		SERVER_PID=$!
		STARTER_PID=$SERVER_PID
		;;
	ejabberd)
		had_epmd=$(live_epmd)
		mkdir -p "$d/spool" "$d/logs"
		fill ejabberd ejabberd.yml "$d/ejabberd.yml"
		fill ejabberd ejabberdctl.cfg "$d/ejabberdctl.cfg"
		chown -R ejabberd: "$d" "$CERT_DIR" 2>/dev/null
		chmod 755 "$BENCH_DIR" 2>/dev/null
		su ejabberd -s /bin/sh -c "ulimit -n \$(ulimit -Hn); exec ejabberdctl \
			--ctl-config '$d/ejabberdctl.cfg' --spool '$d/spool' \
			--logs '$d/logs' --node '$NODE' foreground" \
			>>"$d/stdout.log" 2>&1 &
		STARTER_PID=$!
		# The figure is the Erlang VM's: find beam.smp by its node.
		local i
		for i in $(seq 1 100); do
			SERVER_PID=$(pgrep -u ejabberd -f "beam.smp.*$NODE" | head -1)
			[ -n "$SERVER_PID" ] && break
			sleep 0.1
		done
		[ -n "$SERVER_PID" ] || { note "ejabberd did not start (see $d)"; return 1; }
		;;
	esac
	if ! wait_port "$(c2s_port "$srv")" "$SERVER_PID"; then
		note "$srv did not listen on $(c2s_port "$srv") (logs in $d)"
		stop_server "$srv"
		return 1
	fi
	if [ "$srv" = ejabberd ]; then
		# the VM starts epmd on its own once it is up
		[ -z "$had_epmd" ] && EPMD_PID=$(live_epmd)
	fi
	# A listening port is not a started server (ejabberd opens it before
	# its modules are up): wait until one account can log in.
	local i ok=
	[ "${2:-}" = noprobe ] && ok=1
	for i in $(seq 1 30); do
		[ -n "$ok" ] && break
		if "$LOAD" -s login -n 1 --users 1 -p "$(c2s_port "$srv")" \
			--password "$PASSWORD" --timeout 5 >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 1
	done
	[ -n "$ok" ] || note "$srv: no probe login succeeded (not provisioned?)"
	# "-" keeps the positions when a value is empty
	echo "${SERVER_PID:--} ${EPMD_PID:--} ${STARTER_PID:--}" >"$d/pids"
	if [ "$BENCH_PIN" = 1 ]; then
		taskset -a -p -c 0 "$SERVER_PID" >/dev/null 2>&1 ||
			note "cannot pin $srv to CPU 0"
	fi
	if [ -n "$BENCH_RT" ]; then
		chrt -a -f -p "$BENCH_RT" "$SERVER_PID" >/dev/null 2>&1 ||
			note "cannot make $srv SCHED_FIFO $BENCH_RT"
	fi
	return 0
}

stop_pid() {
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
}

stop_server() {
	local srv=$1 d pids
	d=$(sdir "$1")
	pids=$(cat "$d/pids" 2>/dev/null) ||
		pids="${SERVER_PID:--} ${EPMD_PID:--} ${STARTER_PID:--}"
	set -- $pids
	local p
	# the server, its starter, then epmd (only when this run started it)
	for p in "${1:--}" "${3:--}" "${2:--}"; do
		[ "$p" = - ] || stop_pid "$p"
	done
	wait 2>/dev/null
	rm -f "$d/pids"
}

stop_all() {
	local srv
	for srv in pigeon prosody ejabberd; do
		[ -f "$(sdir "$srv")/pids" ] && stop_server "$srv"
	done
	return 0
}

run_load() {
	local srv=$1
	shift
	local pin=() port a
	[ "$BENCH_PIN" = 1 ] && pin=(taskset -c 1)
	[ -n "$BENCH_RT" ] && pin=(chrt -f "$BENCH_RT" ${pin[@]+"${pin[@]}"})
	port=$(c2s_port "$srv")
	for a in "$@"; do
		[ "$a" = --direct-tls ] && port=$(tls_port "$srv")
	done
	"${pin[@]}" "$LOAD" -p "$port" --password "$PASSWORD" \
		--key-cache "$(sdir "$srv")/keys.bin" "$@"
}

provision() {
	local n=$1 srv rc=0 have
	for srv in $SERVERS; do
		installed "$srv" || { note "$srv is not installed: skipped"; continue; }
		have=$(cat "$(sdir "$srv")/accounts" 2>/dev/null || echo 0)
		if [ "$have" -ge "$n" ]; then
			note "$srv: load1..load$have exist already"
			continue
		fi
		note "$srv: registering load$((have + 1))..load$n (in-band, XEP-0077)"
		start_server "$srv" noprobe || { rc=1; continue; }
		if run_load "$srv" -s register -n $((n - have)) --first $((have + 1)) \
			--concurrency 16; then
			echo "$n" >"$(sdir "$srv")/accounts"
		else
			rc=1
		fi
		stop_server "$srv"
	done
	return $rc
}

# pep: the owner (--first, default 1) and its --contacts (100) accounts
# after it get rosters with subscription both, through pigeonctl (Pigeon
# only: the peers have no such command).
pep_rosters() {
	local first=1 contacts=100 prev= a owner i d
	for a in "$@"; do
		case $prev in
		--first) first=$a ;;
		--contacts) contacts=$a ;;
		esac
		prev=$a
	done
	d=$(sdir pigeon)
	owner=load$first
	note "pigeon: rosters of $owner and load$((first + 1))..load$((first + contacts)) (subscription both)"
	for i in $(seq $((first + 1)) $((first + contacts))); do
		"$builddir/pigeonctl" -c "$d/pigeon.yml" add_rosteritem "$owner" \
			localhost "load$i" localhost "" "" both >/dev/null &&
			"$builddir/pigeonctl" -c "$d/pigeon.yml" add_rosteritem \
				"load$i" localhost "$owner" localhost "" "" both \
				>/dev/null || return 1
	done
}

# pepset: the bytes of the PubSub tables and their indexes.
pep_store_cmd() {
	local tables="'pubsub_node', 'pubsub_item', 'pubsub_affiliation', 'pubsub_subscription'"
	if [ -n "$BENCH_PGSQL" ]; then
		echo "psql '$BENCH_PGSQL' -X -A -t -c \"SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(ARRAY[$tables]) AS t\""
	else
		echo "sqlite3 $(sdir pigeon)/pigeon.db \"SELECT sum(d.pgsize) FROM dbstat d JOIN sqlite_schema s ON s.name = d.name WHERE s.tbl_name IN ($tables)\""
	fi
}

# Prints the JSON reports side by side, with each peer's ratio to Pigeon.
side_by_side() {
	python3 - "$@" <<'EOF'
import json, sys
reports = []
for path in sys.argv[1:]:
    name = path.rsplit('/', 1)[-1].rsplit('.', 1)[0].rsplit('-', 1)[1]
    try:
        with open(path) as f:
            reports.append((name, json.load(f)))
    except (OSError, ValueError):
        pass
if not reports:
    sys.exit(0)
skip = {'exit_code', 'keys_derived', 'hold_s'}
keys = []
for _, r in reports:
    for k, v in r.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) \
                and k not in skip and k not in keys:
            keys.append(k)
base = dict(reports).get('pigeon')
head = ['figure'] + [n for n, _ in reports]
peers = [n for n, _ in reports if n != 'pigeon'] if base else []
head += ['%s/pigeon' % p for p in peers]
rows = [head]
def fmt(v):
    if v is None:
        return '-'
    return '%d' % v if float(v).is_integer() else '%.2f' % v
for k in keys:
    row = [k] + [fmt(r.get(k)) for _, r in reports]
    for p in peers:
        pv, bv = dict(reports)[p].get(k), base.get(k)
        row.append('%.2f' % (pv / bv) if pv is not None and bv else '-')
    rows.append(row)
rows.append(['exit_code'] + [str(r.get('exit_code')) for _, r in reports]
            + ['' for _ in peers])
w = [max(len(r[i]) for r in rows) for i in range(len(head))]
for r in rows:
    print('  '.join(c.rjust(w[i]) if i else c.ljust(w[i])
                    for i, c in enumerate(r)))
EOF
}

[ $# -ge 1 ] || { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ -x "$LOAD" ] || die "$LOAD is not built (make bench/pigeon-load)"
mkdir -p "$BENCH_DIR/results" || die "cannot create $BENCH_DIR"
trap 'stop_all; exit 130' INT TERM

case $1 in
provision)
	[ $# -eq 2 ] || die "usage: run.sh provision N"
	provision "$2"
	exit $?
	;;
stop)
	stop_all
	exit 0
	;;
esac

scenario=$1
shift
stamp=$(date +%Y%m%d-%H%M%S)
files=()
status=0
echo "== $scenario $* ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs," \
	"pinning ${BENCH_PIN}${BENCH_RT:+, SCHED_FIFO $BENCH_RT}, $BENCH_CERT certificate, load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg))"
[ -n "$BENCH_PGSQL" ] && echo "-- Pigeon stores in PostgreSQL ($BENCH_PGSQL)"
for srv in $SERVERS; do
	installed "$srv" || { note "$srv is not installed: skipped"; continue; }
	case $scenario in
	pep | pepset)
		[ "$srv" = pigeon ] || {
			note "$scenario: Pigeon only (rosters and store sizes through its tools): $srv skipped"
			continue
		}
		;;
	esac
	echo "-- $(version "$srv")"
	start_server "$srv" || { status=1; continue; }
	if [ "$scenario" = pep ] && ! pep_rosters "$@"; then
		note "pigeon: pigeonctl add_rosteritem failed"
		stop_server "$srv"
		status=1
		continue
	fi
	out=$BENCH_DIR/results/$stamp-$srv.json
	extra=()
	# Pigeon's offline store can be counted: time the storing too.
	if [ "$scenario" = offline ] && [ "$srv" = pigeon ]; then
		if [ -n "$BENCH_PGSQL" ] && command -v psql >/dev/null; then
			extra=(--verify-cmd "psql '$BENCH_PGSQL' -X -A -t -c \
'SELECT count(*) FROM offline_messages'")
		elif [ -z "$BENCH_PGSQL" ] && command -v sqlite3 >/dev/null; then
			extra=(--verify-cmd "sqlite3 $(sdir pigeon)/pigeon.db \
'SELECT count(*) FROM offline_messages'")
		fi
	fi
	if [ "$scenario" = pepset ]; then
		extra=(--verify-cmd "$(pep_store_cmd)")
	fi
	# Pigeon's own delivery latency next to the tool's (its control
	# socket's `latency` command).
	if [ "$scenario" = chat ] && [ "$srv" = pigeon ]; then
		extra+=(--server-ctl "$(sdir pigeon)/ctl.sock")
	fi
	run_load "$srv" -s "$scenario" --server-pid "$SERVER_PID" --json "$out" \
		${extra[@]+"${extra[@]}"} "$@" || status=1
	stop_server "$srv"
	files+=("$out")
done
echo
echo "== side by side: $scenario $*"
side_by_side "${files[@]}"
echo "(JSON in $BENCH_DIR/results/$stamp-*.json)"
exit $status
