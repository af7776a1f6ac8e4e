#!/usr/bin/env bash
# Lints with golangci-lint at the version pinned here, installing it (go install, into
# GOPATH/bin) when that version is missing. Checks the build with the chaos tags, a superset
# of the default one (no file is built only without them): linted alone, the default build
# would call the chaos suite's helpers unused. Then the modules of their own (deploy/check,
# bench/watermill) with the same configuration. Fails when the linter cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v2.15.0
bin=$(go env GOPATH)/bin/golangci-lint
if ! "$bin" version 2>/dev/null | grep -q "version ${version#v} "; then
	echo "installing golangci-lint $version"
	go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$version"
fi
"$bin" run --build-tags chaos,chaosquick ./...
for mod in deploy/check bench/watermill; do
	echo "golangci-lint: $mod"
	(cd "$mod" && "$bin" run --config ../../.golangci.yaml ./...)
done
