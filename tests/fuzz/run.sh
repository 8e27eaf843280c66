#!/usr/bin/env bash
# Builds and runs Pigeon's libFuzzer targets (STYLE.md: parsers and codecs
# get fuzz targets).
#
# Usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
#   SECONDS  how long each target runs (default 60); 0 only builds and
#            replays the seed corpus once.
#   TARGET   a subset of: fuzz_xml_stream fuzz_jid fuzz_sasl fuzz_ctl
#            fuzz_config (default: all).
#
# Where it runs: tests/run-all.sh (hence .ci/run) builds every target and
# runs each for 20 s (PIGEON_FUZZ_SECONDS) so that a target that stops
# building or finds something fails CI; before a release, run them longer:
#   make -C _build fuzz                    (FUZZ_SECONDS=600 each, default)
#   tests/fuzz/run.sh 3600                 (an hour each)
#
# Needs clang with libFuzzer (Debian/Ubuntu: clang-14, libclang-rt-14-dev)
# and the -dev packages of expat, libevent, libidn, openssl, libsodium and
# libyaml.  Each target is compiled with
#   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE
# against only the src/*.c files it needs, into $FUZZ_OUT (default
# $TMPDIR/pigeon-fuzz, $TMPDIR defaulting to /tmp): nothing is written into
# the source tree.  The targets run side by side, each with a scratch
# corpus in $FUZZ_OUT/corpus/TARGET (kept between runs, so later runs start
# where the last stopped) seeded from tests/fuzz/corpus/TARGET, and with
# tests/fuzz/TARGET.dict as dictionary when there is one.
#
# Exit status: 0 when no target found anything; 1 when one crashed, leaked,
# timed out or hit UB (the reproducer is in $FUZZ_OUT/artifacts/TARGET/ and
# the report in $FUZZ_OUT/logs/TARGET.log); 2 when a build failed.
# Reproduce one finding:  $FUZZ_OUT/bin/TARGET CRASH-FILE
#
# Environment: CC (default clang, then clang-14), FUZZ_OUT, FUZZ_FLAGS (extra
# libFuzzer flags, e.g. "-jobs=4"), FUZZ_SEQUENTIAL=1 to run one at a time.
set -u

seconds=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
case $seconds in
''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-${TMPDIR:-/tmp}/pigeon-fuzz}

if [ -z "${CC:-}" ]; then
	if command -v clang >/dev/null 2>&1; then CC=clang
	elif command -v clang-14 >/dev/null 2>&1; then CC=clang-14
	else echo "run.sh: clang not found" >&2; exit 2
	fi
fi

# target -> the sources and pkg-config packages it links.
declare -A srcs pkgs
srcs[fuzz_xml_stream]="src/lib/xml.c src/lib/xml_parser.c src/lib/log.c"
pkgs[fuzz_xml_stream]="expat libevent libsodium"
srcs[fuzz_jid]="src/lib/jid.c src/lib/log.c"
pkgs[fuzz_jid]="libidn"
srcs[fuzz_sasl]="src/lib/sasl.c src/lib/scram.c src/lib/base64.c src/lib/log.c"
pkgs[fuzz_sasl]="libcrypto libsodium libidn"
srcs[fuzz_ctl]="src/ctl/ctl_proto.c src/lib/log.c"
pkgs[fuzz_ctl]="libevent"
srcs[fuzz_config]="src/lib/config.c src/lib/config_yaml.c src/lib/suggest.c src/lib/log.c"
pkgs[fuzz_config]="yaml-0.1 libidn"
all="fuzz_xml_stream fuzz_jid fuzz_sasl fuzz_ctl fuzz_config"

targets=${*:-$all}
for t in $targets; do
	if [ -z "${srcs[$t]:-}" ]; then
		echo "run.sh: unknown target $t (known: $all)" >&2
		exit 2
	fi
done

mkdir -p "$out/bin" "$out/logs" || exit 2

# ---- build -----------------------------------------------------------------
cflags="-g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE"
for t in $targets; do
	# shellcheck disable=SC2086
	if ! deps=$(pkg-config --cflags --libs ${pkgs[$t]}); then
		echo "run.sh: pkg-config failed for $t (${pkgs[$t]})" >&2
		exit 2
	fi
	src_paths=""
	for s in ${srcs[$t]}; do src_paths="$src_paths $top/$s"; done
	echo "build $t"
	# shellcheck disable=SC2086
	if ! $CC $cflags -I"$top/include" -I"$top/src/lib" -I"$top/src/ctl" \
		-o "$out/bin/$t" "$here/$t.c" $src_paths $deps -pthread; then
		echo "run.sh: build of $t failed" >&2
		exit 2
	fi
done

# ---- run -------------------------------------------------------------------
# UBSan only reports by default; a report must fail the run.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

run_one() {
	local t=$1 args
	mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
	args=(-artifact_prefix="$out/artifacts/$t/" -timeout=10
	      -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1)
	[ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")
	if [ "$seconds" -gt 0 ]; then
		args+=(-max_total_time="$seconds")
	else
		args+=(-runs=0)
	fi
	# The first directory is where new inputs go: keep it out of the
	# source tree; the committed seeds are read only.
	# shellcheck disable=SC2086
	"$out/bin/$t" "${args[@]}" ${FUZZ_FLAGS:-} \
		"$out/corpus/$t" "$here/corpus/$t" >"$out/logs/$t.log" 2>&1
}

declare -A pids
for t in $targets; do
	echo "run $t for ${seconds}s (log: $out/logs/$t.log)"
	if [ "${FUZZ_SEQUENTIAL:-0}" = 1 ]; then
		run_one "$t"
		pids[$t]="rc:$?"
	else
		run_one "$t" &
		pids[$t]=$!
	fi
done

failed=0
for t in $targets; do
	p=${pids[$t]}
	if [ "${p#rc:}" != "$p" ]; then rc=${p#rc:}
	else wait "$p"; rc=$?
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/logs/$t.log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/logs/$t.log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$out/logs/$t.log" | tail -1)
	if [ "$rc" -eq 0 ]; then
		printf '%-16s ok    %s execs, %s exec/s, %s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-}"
	else
		failed=1
		printf '%-16s FAIL  (exit %s) see %s\n' "$t" "$rc" "$out/logs/$t.log"
		grep -m1 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY|deadly signal|ERROR: libFuzzer' \
			"$out/logs/$t.log" | sed 's/^/    /'
		find "$out/artifacts/$t" -type f -newer "$out/bin/$t" \
			-printf '    artifact: %p\n' 2>/dev/null
	fi
done
exit $failed
