// Package bench measures jetflow against what a user would otherwise write. Engine runs N runs
// of a linear noop workflow through a real in-process worker under a prefix of its own.
// Pipeline runs the same chain by hand: the hand loop (per step: consume, KV get, KV create,
// publish the next step with a Nats-Msg-Id, ack, on a bucket with nats.go's defaults), the
// same loop with leader reads, or the raw chain (consume, publish next, ack). Watermill runs
// the chain as a Watermill router in a child process, built from the module in
// bench/watermill so that jetflow's module does not depend on Watermill. Run on the same server
// with the same sizes, in turn, the ratios of the figures are jetflow's price or gain.
// `jetflow bench` uses it; every object a run creates is deleted when it returns.
package bench
