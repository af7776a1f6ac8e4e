// Package consumer is the worker: it pulls steps from one durable consumer per node type,
// runs their handlers with bounded concurrency, timeouts, heartbeats and retries, records each
// outcome as a checkpoint, sends the steps that come next, and moves steps that cannot finish
// to the DLQ. It owns the step state machine of DESIGN.md ("Executing one step").
//
// A handler's error says what happens next: nil means done; Permanent(err) sends the step to
// the DLQ now; RetryAfter(d, err) retries after d; Park(t) waits until t without spending an
// attempt; anything else retries with the node's backoff.
//
// # The state machine, step by step
//
// Worker.pull fetches as many steps as the worker has free slots (and for short steps a queue's
// worth more, kept alive while they wait: slots.go), and Worker.process
// takes each delivery through DESIGN.md's numbered steps, one function each:
//
//  1. Decode: Worker.decode (process.go) — envelope, definition, node; malformed → DLQ.
//  2. Read: stepRun.read, stepRun.checkRun (runcheck.go: a step of a run with no record goes
//     to the DLQ as an unknown run), then stepRun.admit (admit.go) — done, dead, cancelled, stale
//     dispatch, copies, crash counting (countCrash), quarantine; markRunning on a redelivery.
//  3. Breaker: stepRun.gate (protect.go) — breaker, fallback while open, rate limit.
//  4. Run: stepRun.execute, stepRun.invoke (invoke.go) — the handler under its timeout,
//     heartbeats, abandonment.
//  5. Record: stepRun.record (record.go) — done, failed (retry, park, fallbacks), deferStep,
//     deadLetter.
//  6. Fan out: stepRun.fanOut (fanout.go) — joins, child publishes, the run's end.
//  7. Ack: at the end of done, deferStep and deadLetter (record.go).
//
// stepRun.run (process.go) strings steps 2–7 together and retries a compare-and-set that
// lost; every state it writes is built by a transition in package checkpoint (From,
// CrashCounted, Running, Done, Failed, Retry, Scheduled, Dead, HandedBack). A broker error
// hands the step back with a growing delay (stepRun.backOff); a result the handler returned
// is held through such errors instead of being dropped (stepRun.recordHeld).
package consumer
