# jetflow — common tasks. `make help` lists them.
GO ?= go

.PHONY: help test race lint bench impact bench-go fuzz chaos chaosquick ci build dev browser

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

build: ## build the jetflow binary into ./bin
	$(GO) build -o bin/jetflow ./cmd/jetflow

dev: ## run jetflow dev (embedded NATS, examples, a worker)
	$(GO) run ./cmd/jetflow dev

test: ## the test suite (as CI runs it)
	$(GO) test -race ./...

race: test ## alias of test: the suite always runs with the race detector

browser: ## the dashboard's browser test in headless Chromium (installs it; refreshes docs/*.png)
	bash scripts/browser-test.sh

lint: ## gofmt, go vet, and golangci-lint (the pinned version, installed when missing), as CI
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	bash scripts/lint.sh

bench: ## jetflow vs the hand loop, the leader-read loop, the Watermill chain and the raw chain: 8 pairs in turn, median ratios and spread
	cd bench/watermill && $(GO) build -o ../../bin/jetflow-bench-watermill .
	$(GO) run ./cmd/jetflow bench --baseline --pairs 8 --watermill bin/jetflow-bench-watermill

impact: ## the impact table: 500 AI workflows against flaky model APIs with no resilience, retries only, and jetflow (about 4 min); writes docs/impact.svg
	$(GO) build -o bin/jetflow ./cmd/jetflow
	bin/jetflow bench impact --chart docs/impact.svg

bench-go: ## the Go benchmarks' engine vs hand-written pipeline (scripts/bench-ratio.sh): 8 alternating pairs, with CPU profiles on demand
	bash scripts/bench-ratio.sh 8 minimal

fuzz: ## every fuzz target for 30 s (found in the code: scripts/fuzz.sh; CI runs 10 s each)
	bash scripts/fuzz.sh 30

chaos: fuzz ## the long suite: fuzzing, then every chaos scenario (about 6 min)
	$(GO) test -tags chaos -count=1 ./chaos/ -run . -timeout 30m -v

chaosquick: ## every chaos scenario at its quick size and the bug reproductions, as CI (about 3.5 min)
	$(GO) test -tags chaosquick -count=1 ./chaos/ -skip '^TestChaosQuick$$' -timeout 10m -v

ci: ## what CI runs (.ci/run): vet, gofmt, the suite, chaosquick, 10 s fuzzing, with a summary
	bash .ci/run
