#!/usr/bin/env bash
# End-to-end check of the metrics: the mail example serves /metrics on
# loopback, a real Prometheus (Debian's package, installed if missing)
# scrapes it every second, and its HTTP API must return non-zero values for
# the runtime's key series. Everything runs in a temporary directory and is
# stopped on exit. Usage: .ci/e2e-prometheus.sh (or make e2e).
set -euo pipefail

GO=${GO:-go}
METRICS_PORT=${METRICS_PORT:-19464}
PROM_PORT=${PROM_PORT:-19090}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	echo "e2e: installing ${need[*]} (apt-get)"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	# Keep the package's own service from starting (it would listen on
	# all interfaces): this script runs its own Prometheus on loopback.
	policy=/usr/sbin/policy-rc.d
	created_policy=""
	if [ ! -e "$policy" ]; then
		created_policy=1
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod +x "$policy"
		trap '$SUDO rm -f "$policy"' EXIT
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
fi

TMP=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "e2e: building the mail example"
(cd "$ROOT" && $GO build -o "$TMP/mail" ./examples/mail)
"$TMP/mail" -data "$TMP/data" -metrics "127.0.0.1:$METRICS_PORT" -serve >"$TMP/mail.log" 2>&1 &
mail_pid=$!
pids+=("$mail_pid")

cat >"$TMP/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fractal-mail
    static_configs:
      - targets: ['127.0.0.1:$METRICS_PORT']
YML
prometheus --config.file="$TMP/prometheus.yml" \
	--web.listen-address="127.0.0.1:$PROM_PORT" \
	--storage.tsdb.path="$TMP/tsdb" >"$TMP/prometheus.log" 2>&1 &
pids+=("$!")

# query EXPR prints the value of the first series of an instant query.
query() {
	curl -fsS --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}

echo "e2e: waiting for the demo and for scrapes"
for _ in $(seq 1 120); do
	grep -q "serving until" "$TMP/mail.log" 2>/dev/null && [ "$(query 'up{job="fractal-mail"}' 2>/dev/null || true)" = 1 ] && break
	kill -0 "$mail_pid" 2>/dev/null || { echo "e2e: the mail example exited" >&2; cat "$TMP/mail.log" >&2; exit 1; }
	sleep 1
done
sleep 3 # a few scrapes after the demo

fail=0
check() { # check NAME EXPR: the value must be a number > 0
	local v
	v=$(query "$2")
	if python3 -c 'import sys; sys.exit(0 if sys.argv[1] not in ("none","NaN") and float(sys.argv[1]) > 0 else 1)' "$v"; then
		printf 'ok    %-58s %s\n' "$1" "$v"
	else
		printf 'FAIL  %-58s %s\n' "$1" "$v"
		fail=1
	fi
}
check 'up' 'up{job="fractal-mail"}'
check 'fractal_messages_total{outcome="ok"}' 'sum(fractal_messages_total{outcome="ok"})'
check 'fractal_messages_total{kind="mailbox"}' 'sum(fractal_messages_total{kind="mailbox"})'
check 'fractal_handler_duration_seconds_count' 'sum(fractal_handler_duration_seconds_count)'
check 'fractal_commit_duration_seconds_count' 'sum(fractal_commit_duration_seconds_count)'
check 'fractal_batch_messages_sum' 'sum(fractal_batch_messages_sum)'
check 'fractal_barrier_syncs_total' 'sum(fractal_barrier_syncs_total)'
check 'fractal_barrier_sync_duration_seconds_count' 'sum(fractal_barrier_sync_duration_seconds_count)'
check 'fractal_barrier_wait_seconds_count' 'sum(fractal_barrier_wait_seconds_count)'
check 'fractal_active_parts' 'sum(fractal_active_parts)'
check 'fractal_activations_total' 'sum(fractal_activations_total{outcome="ok"})'
check 'fractal_part_file_bytes' 'sum(fractal_part_file_bytes)'
check 'fractal_scatter_parts_count' 'sum(fractal_scatter_parts_count)'
check 'go_goroutines' 'go_goroutines{job="fractal-mail"}'
check 'process_resident_memory_bytes' 'process_resident_memory_bytes{job="fractal-mail"}'

echo "e2e: stopping the mail example (SIGTERM)"
kill -TERM "$mail_pid"
if ! wait "$mail_pid"; then
	echo "e2e: the mail example did not close cleanly" >&2
	cat "$TMP/mail.log" >&2
	fail=1
fi
tail -n 2 "$TMP/mail.log"
if [ "$fail" -ne 0 ]; then
	echo "e2e: FAILED" >&2
	exit 1
fi
echo "e2e: PASS"
