// Package producer starts runs and publishes step messages. Every step is published with the
// Nats-Msg-Id of its dispatch, so publishing the same step twice within the steps stream's
// duplicate window stores it once; fan-out in the worker publishes through the same code.
package producer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/fastjson"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// DefaultMaxInputBytes is the default limit of a run's input and of a node's output.
const DefaultMaxInputBytes = 256 << 10

var (
	// ErrUnknownWorkflow means no definition is registered under the name.
	ErrUnknownWorkflow = errors.New("unknown workflow")
	// ErrBadInput means the input is not valid JSON or is too large.
	ErrBadInput = errors.New("bad input")
	// ErrRunExists means the run ID is taken by a run of another workflow or input.
	ErrRunExists = errors.New("run ID already used")
	// ErrDuplicate means the broker had already stored a message this publish expected to be new.
	ErrDuplicate = errors.New("unexpected duplicate publish")
)

// Config tunes a Producer.
type Config struct {
	// Names of the installation (default prefix "jetflow").
	Names workflow.Names
	// MaxInputBytes is the largest run input accepted (default 256 KiB).
	MaxInputBytes int
	// OnStart, when set, is called with the workflow's name for every new run (metrics).
	OnStart func(workflow string)
	// Tracer, when set, traces each start; its span is the parent of the run's steps.
	Tracer trace.TracerProvider
}

// Producer starts runs.
type Producer struct {
	js    jetstream.JetStream
	store *checkpoint.Store
	cfg   Config
}

// New returns a Producer publishing through js and recording runs in store.
func New(js jetstream.JetStream, store *checkpoint.Store, cfg Config) *Producer {
	if cfg.Names.Prefix() == "" {
		cfg.Names = workflow.MustNames("")
	}
	cfg.MaxInputBytes = cmp.Or(cfg.MaxInputBytes, DefaultMaxInputBytes)
	return &Producer{js: js, store: store, cfg: cfg}
}

// StartOptions tunes Start.
type StartOptions struct {
	// ID is the run ID; empty means a new UUIDv7. Starting twice with the same ID, workflow and
	// input starts one run (the roots are published again, deduplicated).
	ID string
}

// NodeInput is the input every node receives: the run's input and its parents' outputs.
type NodeInput struct {
	Input json.RawMessage            `json:"input"`
	Nodes map[string]json.RawMessage `json:"nodes"`
}

// EncodeNodeInput returns the JSON of NodeInput{Input: input, Nodes: nodes}, as
// encoding/json writes it; the common case (node names and values that need no escaping)
// is written without reflection, since every step's child input is encoded this way.
func EncodeNodeInput(input json.RawMessage, nodes map[string]json.RawMessage) ([]byte, error) {
	if b, ok := appendNodeInput(input, nodes); ok {
		return b, nil
	}
	return json.Marshal(NodeInput{Input: input, Nodes: nodes})
}

func appendNodeInput(input json.RawMessage, nodes map[string]json.RawMessage) ([]byte, bool) {
	if len(input) == 0 || nodes == nil {
		return nil, false
	}
	size := len(input) + 32
	for k, v := range nodes {
		size += len(k) + len(v) + 4
	}
	b := append(make([]byte, 0, size), `{"input":`...)
	b, ok := fastjson.AppendRaw(b, input)
	if !ok {
		return nil, false
	}
	b = append(b, `,"nodes":{`...)
	for i, k := range slices.Sorted(maps.Keys(nodes)) {
		if len(nodes[k]) == 0 || !fastjson.PlainString(k) {
			return nil, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":`...)
		if b, ok = fastjson.AppendRaw(b, nodes[k]); !ok {
			return nil, false
		}
	}
	return append(b, '}', '}'), true
}

// Start starts a run of the registered workflow name with input (JSON; empty means null)
// and returns its ID. The ID comes back with an error too, whenever it is known (always,
// unless opts.ID is invalid or no UUID could be made): after the run record is written, a
// failed publish of the roots leaves the run to be finished by a Start with that ID and the
// same input (which publishes the roots again, deduplicated), or, within the steps
// stream's duplicate window, by the reaper (checkpoint.Reaper).
func (p *Producer) Start(ctx context.Context, name string, input []byte, opts StartOptions) (string, error) {
	id := opts.ID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return "", fmt.Errorf("new run ID: %w", err)
		}
		id = u.String()
	} else if !workflow.ValidRunID(id) {
		return "", fmt.Errorf("%w: run ID %q: use 1 to 64 letters, digits, '_' or '-'", ErrBadInput, workflow.OneLine(id, 80))
	}
	input, err := CheckInput(input, p.cfg.MaxInputBytes)
	if err != nil {
		return id, err
	}
	ref, err := p.store.WorkflowRef(ctx, name)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return id, fmt.Errorf("%w %q: apply it first with `jetflow workflows apply FILE`", ErrUnknownWorkflow, name)
	}
	if err != nil {
		return id, err
	}
	if p.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = p.cfg.Tracer.Tracer("jetflow").Start(ctx, "run "+name, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(tracing.AttrWorkflow.String(name), tracing.AttrRun.String(id)))
		defer span.End()
	}
	rec := &checkpoint.Run{ID: id, Workflow: name, Def: ref.Hash, Input: input, Created: time.Now().UTC()}
	fresh := true
	if err := p.store.CreateRun(ctx, rec); errors.Is(err, checkpoint.ErrConflict) {
		old, err := p.store.Run(ctx, id)
		if err != nil {
			return id, fmt.Errorf("read run %s: %w", id, err)
		}
		if old.Workflow != name || !bytes.Equal(old.Input, input) {
			return id, fmt.Errorf("%w: run %s exists with another workflow or input", ErrRunExists, id)
		}
		rec, fresh = old, false
	} else if err != nil {
		return id, fmt.Errorf("record run %s: %w", id, err)
	}
	// From here on the run exists: an error says how to finish it.
	unfinished := func(err error) error {
		return fmt.Errorf("run %s is recorded but its first steps may not be published: %w (start it again with the same ID and input to finish)", id, err)
	}
	def, err := p.store.Definition(ctx, rec.Def)
	if err != nil {
		return id, unfinished(fmt.Errorf("definition of %s: %w", name, err))
	}
	nodeInput, err := EncodeNodeInput(input, map[string]json.RawMessage{})
	if err != nil {
		return id, unfinished(err)
	}
	for _, n := range def.Roots() {
		env := &workflow.Envelope{RunID: id, Workflow: name, Def: rec.Def, Node: n.Name, Input: nodeInput, Dispatch: workflow.DispatchFirst}
		dup, retried, err := p.publishRoot(ctx, n.Type, env)
		if err != nil {
			return id, unfinished(err)
		}
		if dup && fresh && !retried {
			return id, fmt.Errorf("%w: step %s of new run %s was already stored", ErrDuplicate, n.Name, id)
		}
	}
	if fresh && p.cfg.OnStart != nil {
		p.cfg.OnStart(name)
	}
	return id, nil
}

// publishAttempts is how many times Start publishes a root step before giving up.
const publishAttempts = 3

// publishRoot publishes a root step, trying again after a failure the broker may recover from
// (a timeout, no responders during a leader election); not after the server refused the
// step. retried says an earlier attempt failed, so a duplicate may be that attempt's.
func (p *Producer) publishRoot(ctx context.Context, nodeType string, env *workflow.Envelope) (dup, retried bool, err error) {
	for attempt := 1; ; attempt++ {
		dup, err = p.Publish(ctx, nodeType, env)
		var apiErr *jetstream.APIError
		if err == nil || attempt == publishAttempts || errors.As(err, &apiErr) || ctx.Err() != nil {
			return dup, attempt > 1, err
		}
		t := time.NewTimer(time.Duration(attempt) * 250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, true, err
		case <-t.C:
		}
	}
}

// CheckInput checks that input is one JSON value of at most max bytes (0: the default) and
// returns it compacted; empty input is null.
func CheckInput(input []byte, max int) ([]byte, error) {
	max = cmp.Or(max, DefaultMaxInputBytes)
	if len(bytes.TrimSpace(input)) == 0 {
		return []byte("null"), nil
	}
	if len(input) > max {
		return nil, fmt.Errorf("%w: input is %d bytes; the limit is %d bytes", ErrBadInput, len(input), max)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, input); err != nil {
		return nil, fmt.Errorf("%w: input is not valid JSON: %s", ErrBadInput, workflow.OneLine(err.Error(), 120))
	}
	return buf.Bytes(), nil
}

// Publish publishes a step with the Nats-Msg-Id of its dispatch and reports whether the
// broker had already stored it (a duplicate within the window).
func (p *Producer) Publish(ctx context.Context, nodeType string, env *workflow.Envelope) (bool, error) {
	return Publish(ctx, p.js, p.cfg.Names, nodeType, env)
}

// Publish publishes a step through js; see Producer.Publish.
func Publish(ctx context.Context, js jetstream.JetStream, names workflow.Names, nodeType string, env *workflow.Envelope) (bool, error) {
	body, err := env.Encode()
	if err != nil {
		return false, err
	}
	msg := &nats.Msg{
		Subject: names.StepSubject(nodeType, env.Workflow, env.Node),
		Header:  nats.Header{},
		Data:    body,
	}
	msg.Header.Set(workflow.HeaderMsgID, env.MsgID())
	msg.Header.Set(workflow.HeaderRun, env.RunID)
	msg.Header.Set(workflow.HeaderNode, env.Node)
	tracing.Inject(ctx, msg.Header)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("publish step %s of run %s: %w", env.Node, env.RunID, err)
	}
	return ack.Duplicate, nil
}

// Schedule publishes env to the schedule subject of its run, node and attempt, to be moved
// onto its step subject by the server at (granularity about 250 ms).
func Schedule(ctx context.Context, js jetstream.JetStream, names workflow.Names, nodeType string, env *workflow.Envelope, attempt int, at time.Time) (bool, error) {
	body, err := env.Encode()
	if err != nil {
		return false, err
	}
	msg := &nats.Msg{
		Subject: names.SchedSubject(env.RunID, env.Node, attempt),
		Header:  nats.Header{},
		Data:    body,
	}
	msg.Header.Set(workflow.HeaderMsgID, env.MsgID())
	msg.Header.Set(workflow.HeaderRun, env.RunID)
	msg.Header.Set(workflow.HeaderNode, env.Node)
	msg.Header.Set(workflow.HeaderSchedule, "@at "+at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(workflow.HeaderScheduleTarget, names.StepSubject(nodeType, env.Workflow, env.Node))
	tracing.Inject(ctx, msg.Header)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("schedule step %s of run %s: %w", env.Node, env.RunID, err)
	}
	return ack.Duplicate, nil
}
