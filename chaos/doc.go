// Package chaos is jetflow's chaos suite. It runs real processes on 127.0.0.1 — nats-server
// (one node, or three with R3), several `jetflow worker` processes built from this module —
// injects faults by signal (SIGKILL, SIGSTOP/SIGCONT), and keeps an external ledger that every
// exec node appends to. After each scenario it checks the promise of DESIGN.md ("The
// promise") against the broker and the ledger, and reports in Jepsen's vocabulary: ok, lost,
// duplicated, unexplained.
//
// The package has tests only. TestChaosQuick (a few runs of four scenarios on one node) is
// part of `go test ./...`; the build tag chaosquick adds every scenario of the table in
// scenarios_test.go at its quick size and the bug reproductions (CI runs them, a few minutes);
// the build tag chaos runs every scenario at size:
//
//	go test ./chaos/ -run TestChaosQuick -timeout 6m
//	go test -tags chaosquick ./chaos/ -skip '^TestChaosQuick$' -timeout 10m
//	go test -tags chaos ./chaos/ -run . -timeout 30m
//
// RELIABILITY.md at the repository root holds the figures and what they mean.
package chaos
