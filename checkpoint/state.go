package checkpoint

import (
	"encoding/json"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Node statuses as stored in a node state. A node with no state is pending.
const (
	StatusRetrying = "retrying"
	StatusRunning  = "running"
	StatusDone     = "done"
	StatusDead     = "dead"
	// StatusSkipped is a node whose `if` was false, or whose parents were all skipped: no
	// handler ran, its output is null, and it joins its children as a done node does.
	StatusSkipped = "skipped"
	// StatusWaiting is a subflow node waiting for its child run to end.
	StatusWaiting = "waiting"
)

// Run end statuses.
const (
	EndCompleted = "completed"
	EndFailed    = "failed"
	EndCancelled = "cancelled"
)

// Run is the record of one run, written once when it starts.
type Run struct {
	ID       string          `json:"id"`
	Workflow string          `json:"workflow"`
	Def      string          `json:"def"`
	Input    json.RawMessage `json:"input"`
	// Parent is the subflow node that started this run; nil for a top-level run.
	Parent  *workflow.ParentRef `json:"parent,omitempty"`
	Created time.Time           `json:"created"`
}

// Node is the state of one node of one run.
type Node struct {
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	Crashes  int    `json:"crashes,omitempty"`
	Delivery uint64 `json:"delivery,omitempty"`
	// Seq is the steps-stream sequence of the message whose delivery marked the node running.
	Seq       uint64          `json:"seq,omitempty"`
	Dispatch  string          `json:"dispatch"`
	NotBefore time.Time       `json:"not_before,omitzero"`
	LastError string          `json:"last_error,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Fallback  bool            `json:"fallback,omitempty"`
	Worker    string          `json:"worker,omitempty"`
	StartedAt time.Time       `json:"started_at,omitzero"`
	EndedAt   time.Time       `json:"ended_at,omitzero"`
	Replays   int             `json:"replays,omitempty"`
	// Sched counts the node's long waits; the pending one is dispatch s<Sched>.
	Sched int `json:"sched,omitempty"`
	// Input replaces the node's input when an operator edited it on replay.
	Input json.RawMessage `json:"input,omitempty"`
	// EditedFrom names the DLQ entry whose replay edited the input.
	EditedFrom uint64 `json:"edited_from,omitempty"`
	// ReplayedFrom names the DLQ entry the node's last replay came from: a replay of it that
	// was interrupted before deleting it only has the delete left, whatever the node did since.
	ReplayedFrom uint64 `json:"replayed_from,omitempty"`
	// Reason is the one-line reason a dead node went to the DLQ.
	Reason string `json:"reason,omitempty"`
	// DLQSeq is the DLQ entry a dead node is kept in.
	DLQSeq uint64 `json:"dlq_seq,omitempty"`
	// Items is a for_each node's item bookkeeping once its list was taken.
	Items *Items `json:"items,omitempty"`
	// Child is the run a subflow node started.
	Child string `json:"child,omitempty"`
	// Signal is the signal a waiting wait node waits for.
	Signal string `json:"signal,omitempty"`
}

// Final reports whether the node reached a state no delivery changes.
func (n *Node) Final() bool {
	return n != nil && (n.Status == StatusDone || n.Status == StatusDead || n.Status == StatusSkipped)
}

// Settled reports whether a node's children may count it: done or skipped.
func (n *Node) Settled() bool {
	return n != nil && (n.Status == StatusDone || n.Status == StatusSkipped)
}

// Items is a for_each node's bookkeeping: the counts, and the items released and not yet
// finished. Its size is bounded by max_parallel (and the dead items waiting for a replay),
// never by the number of items: each item's own state is its own key.
type Items struct {
	// List is the blob reference of the node's list of items, as its for_each gave it.
	List json.RawMessage `json:"list"`
	// Count is how many items the list has.
	Count int `json:"count"`
	// Done is how many items are done.
	Done int `json:"done"`
	// Dead is how many items are dead (in the DLQ).
	Dead int `json:"dead"`
	// Next is the index of the next item never released.
	Next int `json:"next"`
	// Inflight are the items released and not finished, each with who released it.
	Inflight []Release `json:"inflight,omitempty"`
	// Requeue are replayed items waiting for a free slot.
	Requeue []Release `json:"requeue,omitempty"`
}

// Release is an item released into flight, and by whom: the item whose finish released it
// (-1: the node's own step; -2: a replay). Whoever released an item publishes it, and
// publishes it again on its own redelivery, so a crash between the two writes loses no item.
type Release struct {
	Item int `json:"i"`
	By   int `json:"by"`
	// Dispatch is the item's dispatch when it is not the first (a replayed item).
	Dispatch string `json:"d,omitempty"`
}

// Join is the set of parents (or sinks) done so far.
type Join struct {
	Done []string `json:"done"`
}

// End is how a run ended.
type End struct {
	Status string    `json:"status"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Cancel records an operator's cancel.
type Cancel struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// WorkflowRef is the registry entry wf.<name>.
type WorkflowRef struct {
	Name    string    `json:"name"`
	Hash    string    `json:"hash"`
	Updated time.Time `json:"updated"`
}
