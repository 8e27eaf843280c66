#!/bin/bash
# Runs the end-to-end suite (tests/e2e, pytest + slixmpp) against the built
# pigeond.  `make check` exports PIGEON_BUILDDIR and PIGEON_SRCDIR; by hand
# both default to the repository this script lives in.
#   PIGEON_TEST_PGSQL=conninfo   also run every test on PostgreSQL
#   PIGEON_REQUIRE_PGSQL=1       fail (not skip) without PostgreSQL
#   PYTEST_ADDOPTS="-k ... -x"   the usual pytest selection
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
: "${PIGEON_SRCDIR:=$repo}"
: "${PIGEON_BUILDDIR:=$repo}"
PIGEON_SRCDIR=$(cd "$PIGEON_SRCDIR" && pwd)
PIGEON_BUILDDIR=$(cd "$PIGEON_BUILDDIR" && pwd)
export PIGEON_SRCDIR PIGEON_BUILDDIR
export PIGEON_MODULE_PATH="$PIGEON_BUILDDIR/modules/.libs"
export PIGEON_SCHEMA_DIR="$PIGEON_SRCDIR/schemas"
# the source tree may be read-only (make distcheck): no caches there
export PYTHONDONTWRITEBYTECODE=1
# Debian's python3 has slixmpp and pytest; another python3 may come first
PYTHON=${PIGEON_PYTHON:-/usr/bin/python3}

if ! "$PYTHON" -c 'import pytest, slixmpp' 2>/dev/null; then
    echo "run-e2e.sh: $PYTHON lacks pytest or slixmpp" \
         "(apt-get install python3-pytest python3-slixmpp)" >&2
    exit 99
fi
if [ ! -x "$PIGEON_BUILDDIR/pigeond" ]; then
    echo "run-e2e.sh: $PIGEON_BUILDDIR/pigeond is not built" >&2
    exit 99
fi

# Test files named on the command line (test_x.py, tests/e2e/test_x.py,
# test_x.py::test_name) replace the whole directory.
args=()
target="$PIGEON_SRCDIR/tests/e2e"
for a in "$@"; do
    case "$a" in
    -*) args+=("$a") ;;
    *test_*.py*) args+=("$PIGEON_SRCDIR/tests/e2e/${a##*/}"); target= ;;
    *) args+=("$a") ;;
    esac
done

cd "$PIGEON_BUILDDIR" || exit 99
"$PYTHON" -m pytest -q -rfEs -p no:cacheprovider \
    --rootdir "$PIGEON_SRCDIR/tests/e2e" ${target:+"$target"} ${args[@]+"${args[@]}"}
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-e2e.sh: pytest collected no tests" >&2
    rc=1
fi
exit "$rc"
