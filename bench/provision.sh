#!/bin/bash
# Creates the accounts load1..loadN (password load-pass) on Pigeon,
# Prosody and ejabberd, whichever are installed: bench/provision.sh N.
# It is `bench/run.sh provision N`; see there and doc/performance.md.
exec "$(dirname "$0")/run.sh" provision "$@"
