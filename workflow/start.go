package workflow

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	// Parent is the run that started this one as a subflow; empty for a top-level run.
	Parent string `json:"parent,omitempty"`
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
	case !ValidRunID(r.RunID):
		return nil, fmt.Errorf("%w: start request run_id %q: use 1 to 64 letters, digits, '_' or '-'", ErrMalformed, OneLine(r.RunID, 80))
	case !ValidName(r.Workflow):
		return nil, fmt.Errorf("%w: start request workflow %q: use letters, digits, '_' and '-' only", ErrMalformed, OneLine(r.Workflow, 80))
	case r.Def != "" && !validToken(r.Def):
		return nil, fmt.Errorf("%w: start request def %q: not a definition hash", ErrMalformed, OneLine(r.Def, 80))
	case r.Parent != "" && !ValidRunID(r.Parent):
		return nil, fmt.Errorf("%w: start request parent %q: not a run ID", ErrMalformed, OneLine(r.Parent, 80))
	case len(bytes.TrimSpace(r.Input)) == 0:
		r.Input = json.RawMessage("null")
	}
	return &r, nil
}
