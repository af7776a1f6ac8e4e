#!/usr/bin/env bash
# Browser test of the dashboard, in headless Chromium (Debian package `chromium`, installed
# here when missing; the test is skipped with a message where it cannot be installed).
#
# It runs `jetflow dev --http 127.0.0.1:PORT --admin-token T` in a temporary directory with
# the example workflows and one more, `gate`, whose middle step fails permanently until a
# file exists. It starts a diamond run (completes) and a gate run (fails), loads the
# dashboard, checks that both runs show, opens the failed run, replays its DLQ entry with the
# token as the dashboard does (POST, Bearer token, same origin), and waits for the run to
# complete. On the way it saves docs/dashboard-overview.png and docs/dashboard-run.png.
#
# Usage: scripts/browser-test.sh            (builds ./cmd/jetflow)
#        JETFLOW_BIN=path scripts/browser-test.sh
# Env:   PORT (default 18080: the next free port is taken if busy), CHROMIUM (the browser).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
token=browser-test-token
port=${PORT:-18080}

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; [ -f "${work:-}/dev.log" ] && tail -n 40 "$work/dev.log" >&2; exit 1; }

# --- Chromium ------------------------------------------------------------------------------
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$browser" ]; then
	say "chromium is missing: installing the Debian package"
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/jetflow-apt.log 2>&1 || true
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		(sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/jetflow-apt.log 2>&1 || true
	fi
	browser=$(command -v chromium || command -v chromium-browser || true)
	if [ -z "$browser" ]; then
		echo "SKIP: headless Chromium is not installed and could not be installed (apt-get install chromium; see /tmp/jetflow-apt.log)"
		exit 0
	fi
fi

work=$(mktemp -d)
devpid=
cleanup() {
	if [ -n "$devpid" ] && kill -0 "$devpid" 2>/dev/null; then
		kill -INT "$devpid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$devpid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$devpid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

chrome() { # chrome ARGS… URL: one headless Chromium run with a throw-away profile
	timeout 60 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
		--disable-background-networking --disable-component-update --disable-sync --no-first-run \
		--hide-scrollbars --user-data-dir="$(mktemp -d -p "$work")" "$@" 2>>"$work/chromium.log"
}

# --- jetflow dev ---------------------------------------------------------------------------
bin=${JETFLOW_BIN:-}
if [ -z "$bin" ]; then
	say "building jetflow"
	bin=$work/jetflow
	go build -o "$bin" ./cmd/jetflow
fi
mkdir -p "$work/workflows"
cp examples/*.yaml "$work/workflows/"
cat >"$work/workflows/gate.yaml" <<YAML
# The browser test's failing workflow: call fails permanently until $work/open exists.
name: gate
nodes:
  - name: prepare
    type: noop
  - name: call
    type: exec
    needs: [prepare]
    with:
      permanent_exit_codes: [3]
      command: |
        if [ ! -f "$work/open" ]; then
          echo "403 Forbidden: the gate is closed (create the file to open it)" >&2
          exit 3
        fi
        echo '{"passed": true}'
  - name: audit
    type: noop
    needs: [prepare]
  - name: report
    type: noop
    needs: [call, audit]
YAML

say "starting jetflow dev"
(cd "$work" && exec "$bin" dev --data "$work/data" --workflows "$work/workflows" --port 0 \
	--http "127.0.0.1:$port" --admin-token "$token" >"$work/dev.log" 2>&1) &
devpid=$!
url= nats=
for _ in $(seq 1 300); do
	url=$(sed -n 's/^Dashboard: //p' "$work/dev.log" | head -n1)
	nats=$(sed -n 's/^NATS: //p' "$work/dev.log" | head -n1)
	[ -n "$url" ] && [ -n "$nats" ] && break
	kill -0 "$devpid" 2>/dev/null || fail "jetflow dev exited (does it have --http and --admin-token?)"
	sleep 0.1
done
[ -n "$url" ] || fail "jetflow dev printed no Dashboard: line"
url=${url%/}
for _ in $(seq 1 150); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && break
	sleep 0.2
done
say "dashboard at $url, NATS at $nats"

jf() { "$bin" --nats "$nats" "$@"; }
out=$(jf start diamond --input '{"who": "browser"}' --wait --timeout 60s) || fail "the diamond run did not complete: $out"
completed=${out%%$'\n'*}
out=$(jf start gate --input '{}' --wait --timeout 60s) && fail "the gate run should have failed: $out"
failed=${out%%$'\n'*}
[ -n "$failed" ] || fail "no run ID for the gate run"
say "completed run $completed, failed run $failed"
curl -s -o /dev/null "$url/api/overview" # starts the dashboard's activity reader
sleep 2 # it reads the last minute; the worker refreshes its presence

# --- the browser ---------------------------------------------------------------------------
mkdir -p docs
say "overview"
chrome --window-size=1280,900 --screenshot="$repo/docs/dashboard-overview.png" "$url/" || fail "chromium could not load $url/"
dom=$(chrome --dump-dom "$url/") || fail "chromium could not load $url/"
grep -q "$completed" <<<"$dom" || fail "the overview does not show the completed run"
grep -q "$failed" <<<"$dom" || fail "the overview does not show the failed run"

say "runs list"
dom=$(chrome --dump-dom "$url/runs?status=failed")
grep -q "$failed" <<<"$dom" || fail "the failed-runs list lacks the failed run"
grep -q "$completed" <<<"$dom" && fail "the failed-runs list shows the completed run"

say "failed run page"
chrome --window-size=1280,900 --screenshot="$repo/docs/dashboard-run.png" "$url/runs/$failed" || fail "chromium could not load the run page"
dom=$(chrome --dump-dom "$url/runs/$failed")
grep -q 'gnode s-dead' <<<"$dom" || fail "the run page shows no dead node"
grep -q '403 Forbidden: the gate is closed' <<<"$dom" || fail "the run page shows no error"
# The Replay button carries {"ids":[N]}; the dumped DOM escapes its quotes.
dlqid=$(grep -o 'data-post="/api/dlq/replay" data-body="[^"]*"' <<<"$dom" | head -n1 | grep -o '[0-9][0-9]*' | tail -n1 || true)
[ -n "$dlqid" ] || fail "the run page offers no Replay button"

say "replay DLQ entry $dlqid as the dashboard does"
touch "$work/open"
code=$(curl -s -o "$work/replay.json" -w '%{http_code}' -X POST "$url/api/dlq/replay" -H "Origin: $url" -H 'Sec-Fetch-Site: same-origin' \
	-H 'Content-Type: application/json' -d "{\"ids\": [$dlqid]}")
[ "$code" = 401 ] || fail "a replay without the token answered $code, want 401: $(cat "$work/replay.json")"
code=$(curl -s -o "$work/replay.json" -w '%{http_code}' -X POST "$url/api/dlq/replay" -H "Origin: $url" -H 'Sec-Fetch-Site: same-origin' \
	-H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "{\"ids\": [$dlqid]}")
[ "$code" = 200 ] || fail "replay answered $code: $(cat "$work/replay.json")"
for _ in $(seq 1 150); do
	jf runs get "$failed" --json 2>/dev/null | grep -q '"status": "completed"' && break
	sleep 0.2
done
dom=$(chrome --dump-dom "$url/runs/$failed")
grep -q 'id="run-status">completed<' <<<"$dom" || fail "the replayed run does not show completed"
grep -q 'gnode s-dead' <<<"$dom" && fail "the replayed run still shows a dead node"

echo "browser test: 1 passed, 0 failed (screenshots in docs/dashboard-overview.png, docs/dashboard-run.png)"
