package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// ErrNoEntry means the DLQ holds no entry with that ID (it was replayed, purged, or aged out).
var ErrNoEntry = errors.New("no DLQ entry")

// stream binds the DLQ stream, saying what to do when it is missing.
func stream(ctx context.Context, js jetstream.JetStream, names workflow.Names) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, names.DLQStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s is missing: run `jetflow setup` first", names.DLQStream())
	}
	return s, err
}

// Get reads one entry by ID (its DLQ stream sequence); ErrNoEntry if there is none.
func Get(ctx context.Context, js jetstream.JetStream, names workflow.Names, id uint64) (*Entry, error) {
	s, err := stream(ctx, js, names)
	if err != nil {
		return nil, err
	}
	return get(ctx, s, names, id)
}

func get(ctx context.Context, s jetstream.Stream, names workflow.Names, id uint64) (*Entry, error) {
	if id == 0 {
		return nil, fmt.Errorf("%w %d", ErrNoEntry, id)
	}
	m, err := s.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w %d", ErrNoEntry, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read DLQ entry %d: %w", id, err)
	}
	e := FromMsg(m.Sequence, m.Header, m.Data)
	e.fromSubject(names, m.Subject)
	return e, nil
}

// Detail is everything about one DLQ entry, as `jetflow dlq show` prints it.
type Detail struct {
	Entry
	// Error (from Entry) is the full text of the last error: the node state's when the run
	// still exists and the state is about this entry, else the header's (cut at 4 KiB).

	// Headers are the entry's message headers.
	Headers map[string][]string `json:"headers"`
	// Input is the input the node received: the step's, or the one an operator edited on an
	// earlier replay (InputEdited).
	Input json.RawMessage `json:"input"`
	// InputEdited says Input was edited on the replay of DLQ entry EditedFrom.
	InputEdited bool `json:"input_edited,omitempty"`
	// EditedFrom is the DLQ entry whose replay edited the input.
	EditedFrom uint64 `json:"edited_from,omitempty"`
	// Def is the hash of the run's definition.
	Def string `json:"def,omitempty"`
	// Dispatch is the failed step's dispatch token.
	Dispatch string `json:"dispatch,omitempty"`
	// Malformed says why the body is not a step envelope.
	Malformed string `json:"malformed,omitempty"`
	// RawBody is the body as text, for a malformed entry.
	RawBody string `json:"body,omitempty"`
	// NodeState is the node's state now; nil when the run is gone or the node has none.
	NodeState *checkpoint.Node `json:"node_state,omitempty"`
	// Run is the run's state now; nil when its record is gone.
	Run *checkpoint.RunView `json:"run"`
}

// Show reads one entry with everything that explains it: its headers, the full error, the
// input the node received, and the run's state. ErrNoEntry if there is no such entry.
func Show(ctx context.Context, js jetstream.JetStream, names workflow.Names, id uint64) (*Detail, error) {
	e, err := Get(ctx, js, names, id)
	if err != nil {
		return nil, err
	}
	d := &Detail{Entry: *e, Headers: map[string][]string{}}
	maps.Copy(d.Headers, e.header)
	env, err := workflow.DecodeEnvelope(e.Body)
	if err != nil {
		d.Malformed, d.RawBody = err.Error(), string(e.Body)
		return d, nil
	}
	d.Def, d.Dispatch = env.Def, env.Dispatch
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	d.Input = loadInput(ctx, store, env.RunID, env.Input)
	d.Run, err = store.Describe(ctx, env.RunID)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run %s of DLQ entry %d: %w", env.RunID, id, err)
	}
	st, _, err := store.NodeAt(ctx, checkpoint.StateKey(env)) // an item's own state for an item's entry
	if err != nil {
		return nil, err
	}
	if st == nil {
		return d, nil
	}
	d.NodeState = st
	if st.LastError != "" && (st.DLQSeq == id || st.DLQSeq == 0 && st.Status == checkpoint.StatusDead) {
		d.Error = st.LastError
	}
	if len(st.Input) > 0 {
		d.Input, d.InputEdited, d.EditedFrom = loadInput(ctx, store, env.RunID, st.Input), true, st.EditedFrom
	}
	return d, nil
}

// loadInput returns a node input with its blob references replaced by their values, or as it
// is when a blob cannot be read (the reason is then the entry's to tell).
func loadInput(ctx context.Context, store *checkpoint.Store, run string, in json.RawMessage) json.RawMessage {
	if out, err := store.LoadNodeInput(ctx, run, in, checkpoint.DefaultMaxPayload); err == nil {
		return out
	}
	return in
}
