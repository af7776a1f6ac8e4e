package checkpoint

import (
	"encoding/json"
	"time"
)

// Node statuses as stored in a node state. A node with no state is pending.
const (
	StatusRetrying = "retrying"
	StatusRunning  = "running"
	StatusDone     = "done"
	StatusDead     = "dead"
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
	// Parent is the run that started this one as a subflow; empty for a top-level run.
	Parent  string    `json:"parent,omitempty"`
	Created time.Time `json:"created"`
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
}

// Final reports whether the node reached a state no delivery changes.
func (n *Node) Final() bool { return n != nil && (n.Status == StatusDone || n.Status == StatusDead) }

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
