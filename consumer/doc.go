// Package consumer is the worker: it pulls steps from one durable consumer per node type,
// runs their handlers with bounded concurrency, timeouts, heartbeats and retries, records each
// outcome as a checkpoint, sends the steps that come next, and moves steps that cannot finish
// to the DLQ. It owns the step state machine of DESIGN.md ("Executing one step").
//
// A handler's error says what happens next: nil means done; Permanent(err) sends the step to
// the DLQ now; RetryAfter(d, err) retries after d; Park(t) waits until t without spending an
// attempt; anything else retries with the node's backoff.
package consumer
