package checkpoint

import (
	"encoding/json"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// The transitions of a node state, one constructor each (DESIGN.md "Executing one step").
// Each takes the state a write starts from and returns the state to write: the caller writes
// it with compare-and-set at the revision it read, so a transition is never half applied.
// A state that was running comes back from every transition not running: only Running marks
// a delivery as running its handler.

// From is the state a write starts from: a copy of cur, or, for a node with no state yet
// (cur nil), a pending state of the given dispatch.
func From(cur *Node, dispatch string) Node {
	if cur == nil {
		return Node{Status: StatusRetrying, Dispatch: dispatch}
	}
	next := *cur
	if next.Status == StatusRunning {
		next.Status = StatusRetrying
	}
	return next
}

// HandedBack marks the state as seen by delivery delivery of stream message seq, which gives
// the step back unfinished (a deferral, a shutdown, an infrastructure error): the next
// delivery of that message then knows the gap was no crash.
func (n Node) HandedBack(delivery, seq uint64) Node {
	n.Delivery, n.Seq = delivery, seq
	return n
}

// CrashCounted records that the delivery before this one crashed or timed out while it ran
// the handler, and that delivery delivery of message seq now holds the step (not running).
func (n Node) CrashCounted(crashes int, delivery, seq uint64) Node {
	n.Status, n.Crashes = StatusRetrying, crashes
	n.Delivery, n.Seq = delivery, seq
	return n
}

// Running marks a redelivery as running the handler, so a crash during the attempt is
// counted by the next one.
func (n Node) Running(delivery, seq uint64, worker string, at time.Time) Node {
	n.Status = StatusRunning
	n.Delivery, n.Seq, n.Worker, n.StartedAt = delivery, seq, worker, at
	return n
}

// Attempt is what an attempt that ran a handler records with its outcome.
type Attempt struct {
	Number    int       // the attempt's number: attempts used, this one included
	Worker    string    // the worker that ran it
	StartedAt time.Time // when the handler started
}

// Started writes the attempt's worker and start, and clears the delivery mark: what every
// outcome of an attempt that ran records.
func (n Node) Started(a Attempt) Node {
	n.Worker, n.StartedAt, n.Delivery, n.Seq = a.Worker, a.StartedAt, 0, 0
	return n
}

// Done records the attempt's success with its output; fallback marks an output that came
// from a fallback type.
func (n Node) Done(a Attempt, out json.RawMessage, fallback bool, at time.Time) Node {
	n = n.Started(a)
	n.Status, n.Attempts, n.Output, n.Fallback = StatusDone, a.Number, out, fallback
	n.EndedAt, n.NotBefore, n.LastError = at, time.Time{}, ""
	return n
}

// Failed records a failed attempt: attempts used and its error. The step then waits (Retry).
func (n Node) Failed(a Attempt, attempts int, errText string) Node {
	n = n.Started(a)
	n.Attempts, n.LastError = attempts, errText
	return n
}

// Retry makes the step wait until notBefore in the stream: the message is given back by
// delivery delivery of seq (a NakWithDelay), so its next delivery is no crash.
func (n Node) Retry(notBefore time.Time, delivery, seq uint64) Node {
	n.Status, n.NotBefore = StatusRetrying, notBefore.UTC()
	n.Delivery, n.Seq = delivery, seq
	return n
}

// Scheduled makes the step wait until notBefore on the schedule path: a new dispatch
// s<Sched> that only the schedule's message carries.
func (n Node) Scheduled(notBefore time.Time) Node {
	n.Status, n.NotBefore = StatusRetrying, notBefore.UTC()
	n.Sched++
	n.Dispatch = workflow.DispatchSchedule(n.Sched)
	n.Delivery, n.Seq = 0, 0
	return n
}

// Dead records the node's move to the DLQ entry dlqSeq, with the reason and the last error.
// worker is kept when the state names none.
func (n Node) Dead(attempts int, reason, errText string, dlqSeq uint64, worker string, at time.Time) Node {
	n.Status, n.Attempts, n.LastError, n.Reason, n.DLQSeq = StatusDead, attempts, errText, reason, dlqSeq
	n.EndedAt, n.Delivery, n.Seq, n.NotBefore = at, 0, 0, time.Time{}
	if n.Worker == "" {
		n.Worker = worker
	}
	return n
}

// Replayed turns a dead node back to a fresh try from DLQ entry dlqSeq, published with
// dispatch rS; input, when set, replaces the node's input (an operator's edit).
func (n Node) Replayed(dlqSeq uint64, input json.RawMessage) Node {
	n.Status = StatusRetrying
	n.Attempts, n.Crashes, n.Delivery, n.Seq = 0, 0, 0, 0
	n.Replays++
	n.Dispatch = workflow.DispatchReplay(dlqSeq)
	n.ReplayedFrom = dlqSeq
	n.NotBefore, n.EndedAt, n.Reason, n.DLQSeq = time.Time{}, time.Time{}, "", 0
	if input != nil {
		n.Input, n.EditedFrom = input, dlqSeq
	}
	return n
}
