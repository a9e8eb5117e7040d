#!/usr/bin/env bash
# Runs a command on a loaded machine: 2 CPU hogs per core, plus writers that
# keep filling the page cache of the file system holding TMPDIR with unsynced
# data (dd of 300 MiB, then rm, in a loop), as a busy CI host would. Used to
# check that the suite does not need a quiet machine:
#
#   .ci/under-load.sh make test
#
# LOAD_CPU (default 2 x cores) and LOAD_WRITERS (default 1) set the load.
set -uo pipefail

cpus=$(nproc)
hogs=${LOAD_CPU:-$((2 * cpus))}
writers=${LOAD_WRITERS:-1}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fractal-load.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$hogs"); do
  (while :; do :; done) &
  pids+=($!)
done
for i in $(seq "$writers"); do
  (while :; do dd if=/dev/zero of="$scratch/w$i" bs=1M count=300 status=none; rm -f "$scratch/w$i"; done) &
  pids+=($!)
done
echo "under-load: $hogs CPU hogs, $writers writers in $scratch, on $cpus cores" >&2
start=$(date +%s)
"$@"
rc=$?
echo "under-load: '$*' exited $rc after $(( $(date +%s) - start ))s" >&2
exit $rc
