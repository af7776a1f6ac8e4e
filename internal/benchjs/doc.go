// Package benchjs measures jetflow against the JetStream work it cannot avoid. Engine runs N
// runs of a linear noop workflow through a real in-process worker under a prefix of its own;
// Pipeline runs the same chain by hand (per step: consume, KV get, KV create, publish the next
// step with a Nats-Msg-Id, ack; the last step creates the run's end record instead), and, in
// raw mode, the bare chain (consume, publish next, ack). Run on the same server with the same
// concurrency, the ratio of the figures is the engine's overhead. `jetflow bench` and the
// consumer benchmarks use it; every object a run creates is deleted when it returns.
package benchjs
