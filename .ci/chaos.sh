#!/usr/bin/env bash
# The reliability suite in full (issue 10), run by `make chaos`: each fault
# class of docs/RELIABILITY.md with the figures it records. The quick
# versions of the same tests run in `make test`.
#
#   CHAOS_CYCLES   kill -9 cycles of the crash test (default 200)
#   FUZZTIME       time per fuzz target (default 30s)
#   CHAOS_KILLMOVES moves interrupted by kill -9 (default 12)
#   CHAOS_LOG      where the full output goes (default: a temporary file)
#   CHAOS_STRICT=1 fail on the known failures too (see KNOWN below)
#
# The disk-full test mounts a tmpfs and so needs root (CAP_SYS_ADMIN); where
# mounting is impossible it is not run, and the summary says so in capitals.
set -uo pipefail

GO=${GO:-go}
CYCLES=${CHAOS_CYCLES:-200}
FUZZTIME=${FUZZTIME:-30s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG=${CHAOS_LOG:-$(mktemp -t fractal-chaos.XXXXXX.log)}
cd "$ROOT"
: >"$LOG"

results=()
failed=0
# step NAME KNOWN COMMAND...: runs COMMAND, logs its output, records PASS or
# FAIL and the lines that carry figures. KNOWN=known marks a failure the
# report already describes: it is printed, and fails the run only with
# CHAOS_STRICT=1.
step() {
	local name=$1 known=$2
	shift 2
	echo "=== $name: $*" | tee -a "$LOG"
	local out
	out=$(mktemp)
	"$@" >"$out" 2>&1
	local rc=$?
	cat "$out" >>"$LOG"
	# The lines that carry figures, and the last progress line of a fuzzer.
	{
		grep -E 'crash: |disk full: |file faults: |full after|flood: |descriptors: |write: |read back: |hostile paths|kills in |etcd member |majority lost: |majority back: |deposits acknowledged in all|partition: |--- FAIL|^FAIL|Failing input' "$out"
		grep -E 'fuzz: elapsed: .*execs: ' "$out" | tail -n 1
	} | sed 's/^/    /'
	rm -f "$out"
	if [ $rc -eq 0 ]; then
		results+=("PASS        $name")
	elif [ "$known" = known ] && [ "${CHAOS_STRICT:-0}" != 1 ]; then
		results+=("KNOWN FAIL  $name (see docs/RELIABILITY.md)")
	else
		results+=("FAIL        $name")
		failed=1
	fi
}

# 1. Crash: kill -9 at random moments under writes, alarms and passivation.
step "crash ($CYCLES kill -9 cycles)" - \
	$GO test -race -count=1 -timeout 90m -run '^TestCrash$' -v ./internal/chaos -chaos.cycles="$CYCLES"

# 2. Disk full: a 4 MiB tmpfs, filled, then freed. Five rounds.
probe=$(mktemp -d)
if mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
	umount "$probe"
	rmdir "$probe"
	step "disk full (tmpfs, 5 rounds)" - \
		env FRACTAL_CHAOS_DISKFULL=1 $GO test -race -count=5 -timeout 20m -run '^TestDiskFull$' -v ./internal/chaos
else
	rmdir "$probe"
	echo "!!! DISK FULL NOT TESTED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)" | tee -a "$LOG"
	results+=("NOT RUN     disk full: CANNOT MOUNT A TMPFS (needs root); run make chaos as root")
fi

# 3. File faults: truncated, corrupted, garbage, newer schema, read-only
#    file and directory, deleted.
step "file faults" - \
	$GO test -race -count=1 -timeout 20m -run '^TestFileFaults$' -v ./internal/chaos

# 4. Resource exhaustion: a flood to one slow part; 10,000 parts under
#    ulimit -n 256.
step "flood of one slow part" - \
	$GO test -race -count=1 -timeout 20m -run '^TestFloodOneSlowPart$' -v ./internal/chaos -chaos.mailbox=0
step "10,000 parts under RLIMIT_NOFILE=256" - \
	$GO test -count=1 -timeout 30m -run '^TestDescriptorLimit$' -v ./internal/chaos -chaos.fdparts=10000 -chaos.fdclients=32

# 5. Bad input: unknown messages, hostile paths, then every fuzz target.
step "unknown messages, hostile paths" - \
	$GO test -race -count=1 -timeout 20m -run '^(TestUnknownMessages|TestPathsStayInside)$' -v ./internal/chaos
for target in ./actors/:FuzzParsePath ./actors/:FuzzSegmentEncoding ./actors/:FuzzResolve \
	./actors/:FuzzDecodeMessage ./cluster/:FuzzDecodeFrame ./cmd/fractal/:FuzzCommand; do
	pkg=${target%%:*}
	name=${target##*:}
	step "fuzz $name ($FUZZTIME)" - \
		$GO test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg"
done

# 6. Security: read-only commands, loopback listeners, TLS between nodes and
#    to etcd.
step "read-only commands, loopback listeners" - \
	$GO test -race -count=1 -timeout 20m -run '^(TestCommandsDoNotWriteTheData|TestSQLRefusesWrites|TestSQLCannotWriteThroughAttach|TestServeMetrics|TestReadOnlyRefusesWritesAnywhere)$' -v ./cmd/fractal ./actors ./persistence
step "TLS between nodes and to etcd" - \
	$GO test -race -count=1 -timeout 20m -run '^(TestProcessesTLS|TestProcessesEtcdTLS)$' -v ./cluster

# 7. Several nodes: kill -9 of the source or the target during moves; etcd
#    losing its leader, then its majority; two nodes cut off from each other.
step "kill -9 during moves (${CHAOS_KILLMOVES:-12})" - \
	$GO test -race -count=1 -timeout 40m -run '^TestProcessesKillDuringMove$' -v ./cluster -cluster.killmoves="${CHAOS_KILLMOVES:-12}"
step "etcd members lost" - \
	$GO test -race -count=1 -timeout 20m -run '^TestProcessesEtcdFailures$' -v ./cluster
step "network partition between nodes" - \
	$GO test -race -count=1 -timeout 20m -run '^TestProcessesPartition$' -v ./cluster

echo
echo "=== make chaos: summary (full output: $LOG)"
printf '%s\n' "${results[@]}"
exit $failed
