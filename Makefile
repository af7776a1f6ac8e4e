# jetflow — common tasks. `make help` lists them.
GO ?= go

.PHONY: help test race lint bench fuzz chaos build dev browser

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-8s %s\n", $$1, $$2}'

build: ## build the jetflow binary into ./bin
	$(GO) build -o bin/jetflow ./cmd/jetflow

dev: ## run jetflow dev (embedded NATS, examples, a worker)
	$(GO) run ./cmd/jetflow dev

test: ## the test suite (as CI runs it)
	$(GO) test -race ./...

race: test ## alias of test: the suite always runs with the race detector

browser: ## the dashboard's browser test in headless Chromium (installs it; refreshes docs/*.png)
	bash scripts/browser-test.sh

lint: ## gofmt, go vet, and golangci-lint when installed
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@command -v golangci-lint >/dev/null && golangci-lint run || echo "golangci-lint not installed: skipped"

bench: ## engine vs hand-written JetStream pipeline: 8 alternating pairs, median ratio
	bash scripts/bench-ratio.sh 8 minimal

fuzz: ## every fuzz target for 30 s (decoders of outside input)
	$(GO) test ./workflow -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime 30s
	$(GO) test ./workflow -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 30s
	$(GO) test ./workflow -run '^$$' -fuzz '^FuzzExpand$$' -fuzztime 30s
	$(GO) test ./nodes -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime 30s
	$(GO) test ./dlq -run '^$$' -fuzz '^FuzzFromMsg$$' -fuzztime 30s
	$(GO) test ./workflow -run '^$$' -fuzz '^FuzzEnvelopeFastPath$$' -fuzztime 30s
	$(GO) test ./checkpoint -run '^$$' -fuzz '^FuzzNodeJSON$$' -fuzztime 30s
	$(GO) test ./producer -run '^$$' -fuzz '^FuzzEncodeNodeInput$$' -fuzztime 30s
	$(GO) test ./internal/fastjson -run '^$$' -fuzz '^FuzzAppendRaw$$' -fuzztime 30s

chaos: fuzz ## the long suite: fuzzing, then every chaos scenario (about 6 min)
	$(GO) test -tags chaos -count=1 ./chaos/ -run . -timeout 30m -v
