package workflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// StartConsumerType is the name the start requests' consumer is built from
// (Names.StartConsumer: jetflow-start); no node type may take it.
const StartConsumerType = "start"

// StartNode is the node name a refused start request is filed under in the DLQ
// (jetflow.dlq.<workflow>._start): it names no node of the workflow.
const StartNode = "_start"

// StartRequest is the body of a start request: what a producer publishes to start a run
// (DESIGN.md, "Starting runs, and who may publish what"). A worker turns it into the run
// record and the run's root steps.
type StartRequest struct {
	V        int             `json:"v"`
	RunID    string          `json:"run_id"`
	Workflow string          `json:"workflow"`
	Input    json.RawMessage `json:"input"`
	// Def is the hash of the definition the producer found registered when it started the
	// run, so a workflow applied again a moment later does not change what the run runs.
	// Empty: the worker takes the definition registered when it takes the request.
	Def string `json:"def,omitempty"`
	// Parent is the node of the run that started this one as a subflow; nil for a
	// top-level run.
	Parent *ParentRef `json:"parent,omitempty"`
	// Schedule names the schedule whose fire this is; its run ID is empty, and the worker
	// derives it from the fire time: <schedule>-<unix seconds>.
	Schedule string `json:"schedule,omitempty"`
}

// MaxScheduleName is the longest schedule name: its run IDs append "-<unix seconds>".
const MaxScheduleName = 52

// ScheduleRunID is the run a schedule's fire at t starts.
func ScheduleRunID(name string, t time.Time) string {
	return name + "-" + strconv.FormatInt(t.Unix(), 10)
}

// ParentRef names the subflow node that started a run: what the child's end needs to wake
// the parent node, and how deep the child is.
type ParentRef struct {
	// Run is the parent run's ID.
	Run string `json:"run"`
	// Node is the parent's subflow node.
	Node string `json:"node"`
	// Workflow is the parent run's workflow.
	Workflow string `json:"workflow"`
	// Def is the parent run's definition hash.
	Def string `json:"def"`
	// Dispatch is the parent node's dispatch that started the child.
	Dispatch string `json:"dispatch"`
	// Depth is the child's nesting depth: 1 for a child of a top-level run.
	Depth int `json:"depth"`
}

// Wake is the envelope that wakes the parent node when the child run ends.
func (p *ParentRef) Wake() *Envelope {
	return &Envelope{V: EnvelopeVersion, RunID: p.Run, Workflow: p.Workflow, Def: p.Def, Node: p.Node, Input: json.RawMessage("null"), Dispatch: p.Dispatch}
}

// check reports what is wrong with a parent reference, or "".
func (p *ParentRef) check() string {
	switch {
	case !ValidRunID(p.Run):
		return "run is not a run ID"
	case !ValidName(p.Node) || !ValidName(p.Workflow):
		return "node or workflow is not a name"
	case !validHash(p.Def):
		return "def is not a definition hash"
	case !validDispatch(p.Dispatch):
		return "bad dispatch"
	case p.Depth < 1 || p.Depth > MaxSubflowDepth:
		return fmt.Sprintf("depth %d is not within 1..%d", p.Depth, MaxSubflowDepth)
	}
	return ""
}

// Encode returns the JSON body of the request.
func (r *StartRequest) Encode() ([]byte, error) {
	c := *r
	c.V = EnvelopeVersion
	if len(c.Input) == 0 {
		c.Input = json.RawMessage("null")
	}
	return json.Marshal(&c)
}

// DecodeStartRequest decodes and checks a start request's body; an error wraps ErrMalformed
// and says what is wrong in one line.
func DecodeStartRequest(b []byte) (*StartRequest, error) {
	var r StartRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: start request is not JSON: %s", ErrMalformed, OneLine(err.Error(), 200))
	}
	switch {
	case r.V != EnvelopeVersion:
		return nil, fmt.Errorf("%w: start request version %d (this worker reads %d)", ErrMalformed, r.V, EnvelopeVersion)
	case r.Schedule != "" && (!ValidName(r.Schedule) || len(r.Schedule) > MaxScheduleName || r.RunID != ""):
		return nil, fmt.Errorf("%w: start request schedule %q: a schedule name, and no run_id", ErrMalformed, OneLine(r.Schedule, 80))
	case r.Schedule == "" && !ValidRunID(r.RunID):
		return nil, fmt.Errorf("%w: start request run_id %q: use 1 to 64 letters, digits, '_' or '-'", ErrMalformed, OneLine(r.RunID, 80))
	case !ValidName(r.Workflow):
		return nil, fmt.Errorf("%w: start request workflow %q: use letters, digits, '_' and '-' only", ErrMalformed, OneLine(r.Workflow, 80))
	case r.Def != "" && !validToken(r.Def):
		return nil, fmt.Errorf("%w: start request def %q: not a definition hash", ErrMalformed, OneLine(r.Def, 80))
	case r.Parent != nil && r.Parent.check() != "":
		return nil, fmt.Errorf("%w: start request parent: %s", ErrMalformed, r.Parent.check())
	case len(bytes.TrimSpace(r.Input)) == 0:
		r.Input = json.RawMessage("null")
	}
	return &r, nil
}
