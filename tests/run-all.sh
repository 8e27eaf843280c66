#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12, in one command:
#   1. installs the build and test dependencies that are missing (apt),
#   2. starts a throwaway PostgreSQL cluster (removed on exit),
#   3. builds in _build/ with -Werror and runs `make check` (unit + e2e,
#      every e2e test on SQLite and on PostgreSQL),
#   4. builds in _build-asan/ with ASan+UBSan and runs `make check` again
#      (skip with PIGEON_SKIP_ASAN=1),
#   5. builds every libFuzzer target (tests/fuzz/run.sh) and runs each for
#      PIGEON_FUZZ_SECONDS (default 20, side by side), so that a target that
#      no longer builds, or finds a crash, fails the run (skip with
#      PIGEON_SKIP_FUZZ=1; releases fuzz longer: `make fuzz`).
# Prints "N passed, N failed" at the end; exits non-zero if anything failed.
#
# Environment: PIGEON_SKIP_ASAN=1, PIGEON_SKIP_FUZZ=1, PIGEON_FUZZ_SECONDS,
# PIGEON_SKIP_APT=1, PIGEON_JOBS (default 2),
# PIGEON_TEST_PGSQL (use this server instead of a throwaway cluster).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
SRCDIR=$(pwd)
JOBS=${PIGEON_JOBS:-2}

log() { printf '\n==== %s\n' "$*"; }
die() { printf 'run-all.sh: %s\n' "$*" >&2; exit 2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# ---- 1. packages ---------------------------------------------------------
PACKAGES=(build-essential autoconf automake libtool pkg-config libevent-dev
    libexpat1-dev libssl-dev libpq-dev libsodium-dev libidn11-dev
    libyaml-dev libsqlite3-dev libstrophe-dev check python3-slixmpp
    python3-pytest python3-openssl postgresql postgresql-client openssl procps
    libomemo-c-dev python3-omemo python3-oldmemo python3-twomemo python3-xmlschema
    clang libclang-rt-14-dev profanity tmux)

if [ "${PIGEON_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        "${SUDO[@]}" apt-get update || die "apt-get update failed"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends "${missing[@]}" || die "apt-get install failed"
    else
        log "all packages installed"
    fi
fi

# ---- 2. a throwaway PostgreSQL ---------------------------------------------
PGTMP=
PGBIN=
cleanup() {
    if [ -n "$PGTMP" ]; then
        if [ -f "$PGTMP/data/postmaster.pid" ]; then
            as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1
        fi
        rm -rf "$PGTMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ -z "${PIGEON_TEST_PGSQL:-}" ]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin"
    PGTMP=$(mktemp -d /tmp/pigeon-pg.XXXXXX) || die "mktemp failed"
    chmod 755 "$PGTMP"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run PostgreSQL as"
        chown postgres: "$PGTMP"
    fi
    log "starting a throwaway PostgreSQL in $PGTMP"
    as_pg "$PGBIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 --no-locale \
        >"$PGTMP/initdb.log" 2>&1 || { cat "$PGTMP/initdb.log"; die "initdb failed"; }
    as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/postgres.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$PGTMP' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { cat "$PGTMP/postgres.log"; die "PostgreSQL did not start"; }
    export PIGEON_TEST_PGSQL="host=$PGTMP port=5432 user=postgres dbname=postgres"
    psql "$PIGEON_TEST_PGSQL" -X -q -c 'SELECT 1' >/dev/null || die "cannot connect to PostgreSQL"
fi
export PIGEON_REQUIRE_PGSQL=1

# ---- 3./4. build and check -------------------------------------------------
PASSED=0
FAILED=0
RESULTS=()

# Adds the counts of one `make check` in build dir $1 to PASSED/FAILED.
count_results() {
    local dir=$1 p=0 f=0 trs res log
    # unit tests: one per Check "Checks: N, Failures: F, Errors: E" line, or
    # one per test program
    for trs in "$dir"/tests/unit/*.trs; do
        [ -e "$trs" ] || continue
        log=${trs%.trs}.log
        local line
        line=$(grep -Eo 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" 2>/dev/null | tail -n 1)
        if [ -n "$line" ]; then
            local n fl er
            read -r n fl er < <(echo "$line" | sed -E 's/[^0-9]+/ /g')
            p=$((p + n - fl - er)); f=$((f + fl + er))
        else
            res=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
            case $res in PASS|SKIP|XFAIL) p=$((p + 1));; *) f=$((f + 1));; esac
        fi
    done
    # e2e: pytest's summary line ("12 passed, 1 failed, 3 skipped in 9.1s")
    log=$dir/tests/run-e2e.sh.log
    if [ -f "$log" ]; then
        local summary ep ef ee
        summary=$(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -n 1)
        ep=$(echo "$summary" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+')
        ef=$(echo "$summary" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+')
        ee=$(echo "$summary" | grep -Eo '[0-9]+ errors?' | grep -Eo '[0-9]+')
        p=$((p + ${ep:-0})); f=$((f + ${ef:-0} + ${ee:-0}))
        res=$(sed -n 's/^:test-result: //p' "$dir/tests/run-e2e.sh.trs" 2>/dev/null | head -n 1)
        if [ -z "$summary" ] && [ "$res" != PASS ]; then
            f=$((f + 1))
        fi
    fi
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
    RESULTS+=("$dir: $p passed, $f failed")
}

show_logs() {
    local dir=$1
    if [ -f "$dir/test-suite.log" ]; then
        log "$dir/test-suite.log"
        cat "$dir/test-suite.log"
    fi
}

# build_and_check NAME DIR CONFIGURE-ARGS...
build_and_check() {
    local name=$1 dir=$2
    shift 2
    log "$name: configure $*"
    mkdir -p "$dir"
    if ! (cd "$dir" && "$SRCDIR/configure" "$@"); then
        FAILED=$((FAILED + 1)); RESULTS+=("$dir: configure failed")
        [ -f "$dir/config.log" ] && tail -n 60 "$dir/config.log"
        return 1
    fi
    log "$name: make -j$JOBS"
    if ! make -C "$dir" -j"$JOBS"; then
        FAILED=$((FAILED + 1)); RESULTS+=("$dir: build failed")
        return 1
    fi
    log "$name: make check"
    rm -f "$dir"/tests/run-e2e.sh.log "$dir"/tests/unit/*.log "$dir"/tests/unit/*.trs
    local rc=0
    make -C "$dir" -j"$JOBS" check || rc=$?
    count_results "$dir"
    if [ $rc -ne 0 ]; then
        show_logs "$dir"
        # make check failed but no test was counted as failed (e.g. a
        # check program did not build)
        case ${RESULTS[-1]} in *", 0 failed") FAILED=$((FAILED + 1));; esac
        return 1
    fi
    return 0
}

if [ -f "$SRCDIR/config.status" ]; then
    die "the source tree is configured in-tree; run 'make distclean' first (out-of-tree builds in _build/ need a clean source tree)"
fi

log "autogen"
./autogen.sh || die "autogen.sh failed"

build_and_check "default build" "$SRCDIR/_build" --enable-werror

if [ "${PIGEON_SKIP_ASAN:-0}" != 1 ]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    build_and_check "sanitizer build" "$SRCDIR/_build-asan" --enable-sanitizers --enable-werror
else
    log "sanitizer pass skipped (PIGEON_SKIP_ASAN=1)"
fi

# ---- 5. fuzz smoke ---------------------------------------------------------
if [ "${PIGEON_SKIP_FUZZ:-0}" != 1 ]; then
    log "fuzz: every target for ${PIGEON_FUZZ_SECONDS:-20}s"
    # Reproducers and logs stay in _build-fuzz/ (artifacts/, logs/).
    if FUZZ_OUT="$SRCDIR/_build-fuzz" tests/fuzz/run.sh "${PIGEON_FUZZ_SECONDS:-20}"; then
        PASSED=$((PASSED + 1)); RESULTS+=("_build-fuzz: every target ran clean")
    else
        FAILED=$((FAILED + 1)); RESULTS+=("_build-fuzz: a fuzz target did not build or found something")
    fi
else
    log "fuzz pass skipped (PIGEON_SKIP_FUZZ=1)"
fi

log "summary"
for r in "${RESULTS[@]}"; do echo "  $r"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
