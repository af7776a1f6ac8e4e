#!/usr/bin/env bash
# Lints with golangci-lint at the version pinned here, installing it (go install, into
# GOPATH/bin) when that version is missing. Checks every build: the default and the chaos
# tags. Fails when the linter cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v2.15.0
bin=$(go env GOPATH)/bin/golangci-lint
if ! "$bin" version 2>/dev/null | grep -q "version ${version#v} "; then
	echo "installing golangci-lint $version"
	go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$version"
fi
"$bin" run ./...
"$bin" run --build-tags chaos,chaosquick ./...
