#!/usr/bin/env bash
# Browser check of the inspection page: the mail example serves it on
# loopback, headless Chromium (Debian's package, installed if missing) loads
# it with a part's branch opened and the part selected, and the rendered page
# must show the tree and that part's details. Usage: .ci/e2e-browser.sh (or
# make e2e).
set -euo pipefail

GO=${GO:-go}
PORT=${INSPECT_PORT:-19480}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v chromium >/dev/null; then
	echo "e2e-browser: installing chromium (apt-get)"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

TMP=$(mktemp -d)
pid=""
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

echo "e2e-browser: building the mail example"
(cd "$ROOT" && $GO build -o "$TMP/mail" ./examples/mail)
"$TMP/mail" -data "$TMP/data" -serve -inspect "127.0.0.1:$PORT" >"$TMP/mail.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
	grep -q "^inspect:" "$TMP/mail.log" && break
	sleep 0.2
done
grep -q "^inspect:" "$TMP/mail.log" || { echo "e2e-browser: the example did not start"; cat "$TMP/mail.log"; exit 1; }

URL="http://127.0.0.1:$PORT/?open=mail/example.org&select=mail/example.org/alice@example.org"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--user-data-dir="$TMP/profile" --virtual-time-budget=5000 --dump-dom "$URL" >"$TMP/dom.html" 2>"$TMP/chromium.log" || {
	echo "e2e-browser: chromium failed"; tail -20 "$TMP/chromium.log"; exit 1; }

fail=0
check() {
	if grep -q -- "$1" "$TMP/dom.html"; then echo "ok    $2"; else echo "FAIL  $2"; fail=1; fi
}
check 'data-path="mail"' "the whole is in the tree"
check 'data-path="mail/example.org"' "a domain is in the tree"
check 'data-path="mail/example.org/alice@example.org"' "the opened domain shows its mailboxes"
check 'id="part-details"' "the selected part's details render"
check '<td>mail/example.org/alice@example.org</td>' "the details name the selected part"
check '<td>active</td>' "the details show its state"
if [ $fail -ne 0 ]; then
	echo "e2e-browser: FAIL; the page as rendered:"; head -c 4000 "$TMP/dom.html"; echo
	exit 1
fi
echo "e2e-browser: PASS"
