#!/usr/bin/env bash
# Browser test of the dashboard, in headless Chromium (Debian package `chromium`, installed
# here when missing; where it cannot be installed the test is skipped with a message — except
# in CI, CI=true, where that is a failure: exit 1, here and in the Go test).
#
# The test is TestBrowserDashboard in cmd/jetflow: it runs the real `jetflow dev`, drives
# Chromium through the DevTools protocol (chromedp) to see a completed and a failed run, open
# the failed one, replay its DLQ entry with the admin token typed into the page, and see the
# run complete. Here it also refreshes docs/dashboard-overview.png and docs/dashboard-run.png.
# `go test ./...` runs the same test wherever Chromium is found.
#
# Usage: scripts/browser-test.sh                 install Chromium if needed, run the test
#        scripts/browser-test.sh --install-only  install Chromium if needed, nothing else (CI)
# Env:   CHROMIUM (the browser; default chromium or chromium-browser on PATH).
#        CI=true: a Chromium that cannot be installed fails (exit 1) instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

install_only=false
case "${1:-}" in
--install-only) install_only=true ;;
"") ;;
*) echo "usage: $0 [--install-only]" >&2; exit 2 ;;
esac

say() { printf '== %s\n' "$*"; }

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
		why="headless Chromium is not installed and could not be installed (apt-get install chromium; see /tmp/jetflow-apt.log)"
		if [ "${CI:-}" = true ]; then
			echo "FAIL: $why; CI (CI=true) must run the browser test" >&2
			[ -s /tmp/jetflow-apt.log ] && tail -n 20 /tmp/jetflow-apt.log >&2
			exit 1
		fi
		echo "SKIP: $why"
		exit 0
	fi
fi
say "browser: $browser"
if $install_only; then
	exit 0
fi

# --- the test ------------------------------------------------------------------------------
mkdir -p "$repo/docs"
CHROMIUM=$browser JETFLOW_SCREENSHOTS="$repo/docs" \
	go test -count=1 -run '^TestBrowserDashboard$' -v ./cmd/jetflow
