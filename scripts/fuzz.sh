#!/usr/bin/env bash
# Runs every fuzz target of the module for SECONDS each (default 30), one after the other.
#
# The targets are found in the code, not listed by hand: every `func FuzzXxx(` at the start
# of a line in a tracked *_test.go file, run in that file's package. A new target is fuzzed
# by `make fuzz` and by CI (.ci/run, 10 s each) without further wiring.
#
# Every target runs even when one fails; the script then exits 1 naming those that failed.
# A run that fails only by Go's own fuzztime race (see fuzz below) is run once more.
# A failing input is kept by Go under the package's testdata/fuzz/FuzzXxx/ (commit it: it
# becomes a regression case of plain `go test`).
#
# Usage: scripts/fuzz.sh [SECONDS [GO-TEST-FLAGS...]]   e.g. scripts/fuzz.sh 10 -json (CI)
#        scripts/fuzz.sh --list       print "package target" for each target, nothing else
set -euo pipefail
cd "$(dirname "$0")/.."

list_only=false
seconds=30
case "${1:-}" in
--list) list_only=true ;;
"") ;;
*[!0-9]* | 0) echo "usage: $0 [SECONDS | --list]  (SECONDS a positive whole number)" >&2; exit 2 ;;
*) seconds=$1 ;;
esac
extra=("${@:2}")

files=$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go' -not -path './.git/*')
# "./dir FuzzName" per target, sorted so the order is stable.
targets=$(for f in $files; do
	sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f" | while read -r name; do
		printf './%s %s\n' "$(dirname "${f#./}")" "$name"
	done
done | sort -u)

if [ -z "$targets" ]; then
	echo "fuzz: no fuzz target found (func FuzzXxx in *_test.go)" >&2
	exit 1
fi
if $list_only; then
	printf '%s\n' "$targets"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fuzz PKG NAME: one run of a target; its output is printed once the run has ended.
# Go's fuzzing coordinator (go1.26 and before) can fail a run with a bare "context deadline
# exceeded" as -fuzztime expires, with no failing input (https://go.dev/issue/75804, fixed in
# go1.27). Such a run — that message and no new file under testdata/fuzz/NAME/, where Go
# writes every failing input — is run once more, and its output is not printed (under -json
# it would count as a failed test); a second one fails.
fuzz() {
	local pkg=$1 name=$2 try before after rc
	for try in 1 2; do
		before=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null | sort || true)
		rc=0
		go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${seconds}s" "${extra[@]}" </dev/null >"$tmp/out" 2>&1 || rc=$?
		after=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null | sort || true)
		if [ "$rc" != 0 ] && [ "$try" = 1 ] && [ "$before" = "$after" ] && grep -q 'context deadline exceeded' "$tmp/out"; then
			echo "fuzz: $name failed with \"context deadline exceeded\" and wrote no failing input: Go's fuzztime race (go.dev/issue/75804); running it once more"
			continue
		fi
		cat "$tmp/out"
		return "$rc"
	done
}

n=$(printf '%s\n' "$targets" | wc -l)
echo "== fuzz: $n targets, ${seconds}s each"
failed=()
while read -r pkg name; do
	echo "== fuzz $pkg $name (${seconds}s)"
	if ! fuzz "$pkg" "$name"; then
		failed+=("$pkg $name")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $n targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $n targets passed (${seconds}s each)"
