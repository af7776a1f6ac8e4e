#!/usr/bin/env bash
# Checks the module's code and dependencies for known vulnerabilities with govulncheck
# (golang.org/x/vuln), reporting only those the code can reach.
#
# Exit 0: no reachable vulnerability, or the check could not run here: the vulnerability
#         database (or the module proxy, for govulncheck itself) cannot be reached. That
#         prints one line starting "govulncheck: skipped:".
# Exit 3: vulnerabilities found (govulncheck's own code); any other failure is non-zero too.
#
# Usage: scripts/govulncheck.sh [PACKAGES]     (default ./...)
# Env:   GOVULNCHECK_VERSION (default v1.1.4)
#        GOVULNDB  database URL (default https://vuln.go.dev; file:///path for a local copy)
#
# govulncheck is installed into a temporary GOBIN and run directly, not through `go run`:
# `go run` turns every failing exit code into 1, and 3 must stay 3.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

version=${GOVULNCHECK_VERSION:-v1.1.4}
db=${GOVULNDB:-https://vuln.go.dev}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The error texts of a network that is not there: DNS, refused or cut connections,
# timeouts, a proxy or TLS in the way, or an HTTP error from the database host.
unreachable='no such host|dial tcp|connection refused|connection reset|network is unreachable|i/o timeout|TLS handshake|certificate|proxyconnect|Client.Timeout|context deadline exceeded|unexpected HTTP status|server misbehaving|temporary failure in name resolution'

if ! GOBIN=$tmp go install "golang.org/x/vuln/cmd/govulncheck@$version" >"$tmp/install.log" 2>&1; then
	if grep -qiE "$unreachable" "$tmp/install.log"; then
		echo "govulncheck: skipped: golang.org/x/vuln@$version cannot be fetched from the module proxy here ($(grep -iE "$unreachable" "$tmp/install.log" | head -n 1))"
		exit 0
	fi
	cat "$tmp/install.log" >&2
	echo "govulncheck: installing golang.org/x/vuln/cmd/govulncheck@$version failed" >&2
	exit 1
fi

"$tmp/govulncheck" -db "$db" "${@:-./...}" >"$tmp/out" 2>&1
rc=$?
case $rc in
0)
	cat "$tmp/out"
	exit 0
	;;
3)
	cat "$tmp/out"
	exit 3
	;;
esac
# A database that cannot be reached fails before any analysis, with
# "govulncheck: fetching vulnerabilities: <network error>".
if grep -q '^govulncheck: fetching vulnerabilities' "$tmp/out" && grep -qiE "$unreachable" "$tmp/out"; then
	echo "govulncheck: skipped: the vulnerability database $db cannot be reached from here ($(grep -m 1 '^govulncheck:' "$tmp/out" | cut -c 1-200))"
	exit 0
fi
cat "$tmp/out" >&2
exit "$rc"
