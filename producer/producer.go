// Package producer starts runs and publishes step messages. A producer starts a run by
// publishing a start request, which a worker turns into the run; steps are published by
// workers only. Every message is published with a Nats-Msg-Id (the run ID for a start
// request, the dispatch for a step), so publishing it twice within the steps stream's
// duplicate window stores it once.
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

// DefaultMaxInputBytes is the default limit of a run's input (16 MiB): the hard limit of
// payloads, checkpoint.DefaultMaxPayload. An input over the inline limit (256 KiB) is stored
// in the blobs bucket and the run carries its reference.
const DefaultMaxInputBytes = checkpoint.DefaultMaxPayload

var (
	// ErrUnknownWorkflow means no definition is registered under the name.
	ErrUnknownWorkflow = errors.New("unknown workflow")
	// ErrBadInput means the input is not valid JSON or is too large.
	ErrBadInput = errors.New("bad input")
	// ErrRunExists means the run ID is taken by a run of another workflow or input.
	ErrRunExists = errors.New("run ID already used")
)

// Config tunes a Producer.
type Config struct {
	// Names of the installation (default prefix "jetflow").
	Names workflow.Names
	// MaxInputBytes is the largest run input accepted (default 16 MiB).
	MaxInputBytes int
	// InlineLimit is the largest input carried inline (default 256 KiB); a larger one is
	// stored as a blob of the run first.
	InlineLimit int
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
	cfg.InlineLimit = cmp.Or(cfg.InlineLimit, checkpoint.DefaultInlineLimit)
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
// and returns its ID. It publishes a start request (DESIGN.md, "Starting runs, and who may
// publish what"): a worker writes the run record and publishes the run's first steps, so a
// producer needs no right to publish steps or write checkpoints. With opts.ID naming a run
// that exists, the same workflow and input start nothing new and return the ID; another
// workflow or input is ErrRunExists. The ID comes back with an error too, whenever it is
// known (always, unless opts.ID is invalid or no UUID could be made).
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
	if !workflow.ValidName(name) {
		return id, fmt.Errorf("%w: workflow name %q: use letters, digits, '_' and '-' only", ErrBadInput, workflow.OneLine(name, 80))
	}
	input, err := CheckInput(input, p.cfg.MaxInputBytes)
	if err != nil {
		return id, err
	}
	ref, err := p.store.WorkflowRef(ctx, name)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return id, fmt.Errorf("%w %q: apply it first with `jetflow workflows apply FILE`", ErrUnknownWorkflow, name)
	} else if err != nil {
		return id, err
	}
	// A large input goes to the blobs bucket first; the request and the record carry its
	// reference, which is the same for the same input, so sameRun compares references.
	if input, err = p.store.Offload(ctx, id, input, p.cfg.InlineLimit); err != nil {
		return id, err
	}
	if opts.ID != "" {
		// Checked before publishing: a start request for a taken ID would be refused by the
		// worker, and the caller would never hear of it.
		if err := p.sameRun(ctx, id, name, input); !errors.Is(err, checkpoint.ErrNotFound) {
			return id, err // nil: the run exists with this workflow and input
		}
	}
	if p.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = p.cfg.Tracer.Tracer("jetflow").Start(ctx, "run "+name, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(tracing.AttrWorkflow.String(name), tracing.AttrRun.String(id)))
		defer span.End()
	}
	req := &workflow.StartRequest{RunID: id, Workflow: name, Input: input, Def: ref.Hash}
	dup, err := p.publishStart(ctx, req)
	if err != nil {
		return id, err
	}
	if dup {
		// Another start of this ID within the duplicate window came first: the run is that
		// one's. Say so when its record is there already and differs.
		if err := p.sameRun(ctx, id, name, input); err != nil && !errors.Is(err, checkpoint.ErrNotFound) {
			return id, err
		}
		return id, nil
	}
	if p.cfg.OnStart != nil {
		p.cfg.OnStart(name)
	}
	return id, nil
}

// sameRun reads run id's record: nil when it is a run of workflow name with input,
// ErrRunExists when it is another, checkpoint.ErrNotFound when there is none.
func (p *Producer) sameRun(ctx context.Context, id, name string, input []byte) error {
	old, err := p.store.Run(ctx, id)
	if err != nil {
		if errors.Is(err, checkpoint.ErrNotFound) {
			return err
		}
		return fmt.Errorf("read run %s: %w", id, err)
	}
	if old.Workflow != name || !bytes.Equal(old.Input, input) {
		return fmt.Errorf("%w: run %s exists with another workflow or input", ErrRunExists, id)
	}
	return nil
}

// publishAttempts is how many times Start publishes a start request before giving up.
const publishAttempts = 3

// publishStart publishes a start request with the run ID as its Nats-Msg-Id, trying again
// after a failure the broker may recover from (a timeout, no responders during a leader
// election); not after the server refused it. dup reports that the broker had stored a
// request of this run already, unless an earlier attempt of this call may have stored it.
func (p *Producer) publishStart(ctx context.Context, req *workflow.StartRequest) (dup bool, err error) {
	return PublishStart(ctx, p.js, p.cfg.Names, req)
}

// PublishStart publishes a start request through js, as Producer.Start does (a worker
// starting a subflow uses it too); see publishStart.
func PublishStart(ctx context.Context, js jetstream.JetStream, names workflow.Names, req *workflow.StartRequest) (dup bool, err error) {
	body, err := req.Encode()
	if err != nil {
		return false, err
	}
	for attempt := 1; ; attempt++ {
		msg := &nats.Msg{Subject: names.StartSubject(req.Workflow), Header: nats.Header{}, Data: body}
		msg.Header.Set(workflow.HeaderMsgID, req.RunID)
		msg.Header.Set(workflow.HeaderRun, req.RunID)
		tracing.Inject(ctx, msg.Header)
		ack, err := js.PublishMsg(ctx, msg)
		if err == nil {
			return ack.Duplicate && attempt == 1, nil
		}
		var apiErr *jetstream.APIError
		if attempt == publishAttempts || errors.As(err, &apiErr) || ctx.Err() != nil {
			return false, fmt.Errorf("publish the start request of run %s: %w", req.RunID, err)
		}
		t := time.NewTimer(time.Duration(attempt) * 250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("publish the start request of run %s: %w", req.RunID, err)
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

// PublishWake publishes the step that wakes a parked node (env, the node's step of the
// dispatch that parked it): a subflow's child ended, a wait node's signal came. Its message
// ID is env.WakeMsgID(): every writer of the child's end may send it, and one is stored.
func PublishWake(ctx context.Context, js jetstream.JetStream, names workflow.Names, nodeType string, env *workflow.Envelope) (bool, error) {
	body, err := env.Encode()
	if err != nil {
		return false, err
	}
	msg := &nats.Msg{Subject: names.StepSubject(nodeType, env.Workflow, env.Node), Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderMsgID, env.WakeMsgID())
	msg.Header.Set(workflow.HeaderRun, env.RunID)
	msg.Header.Set(workflow.HeaderNode, env.Node)
	tracing.Inject(ctx, msg.Header)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("wake node %s of run %s: %w", env.Node, env.RunID, err)
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
	subject := names.SchedSubject(env.RunID, env.Node, attempt)
	if env.Item != nil {
		subject = names.ItemSchedSubject(env.RunID, env.Node, *env.Item, attempt)
	}
	msg := &nats.Msg{
		Subject: subject,
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

// PublishSchedule publishes the message schedule of sc to its subject in the steps stream:
// from then on the server fires a start request of sc.Workflow with sc.Input onto the start
// subject (@every, or cron in sc.TZ), whether or not a worker runs; a worker takes each fire
// as the run <name>-<fire unix seconds>. A schedule published again replaces the earlier
// one (the subject keeps one message).
func PublishSchedule(ctx context.Context, js jetstream.JetStream, names workflow.Names, name, wf string, input json.RawMessage, pattern, tz string) error {
	body, err := (&workflow.StartRequest{V: workflow.EnvelopeVersion, Workflow: wf, Input: input, Schedule: name}).Encode()
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: names.ScheduleSubject(name), Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderSchedule, pattern)
	if tz != "" {
		msg.Header.Set(workflow.HeaderScheduleTZ, tz)
	}
	msg.Header.Set(workflow.HeaderScheduleTarget, names.StartSubject(wf))
	msg.Header.Set("Nats-Rollup", "sub") // one schedule message per subject
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish the schedule %s: %w", name, err)
	}
	return nil
}

// RemoveSchedule takes schedule name's message schedule out of the steps stream: it fires
// no more.
func RemoveSchedule(ctx context.Context, js jetstream.JetStream, names workflow.Names, name string) error {
	s, err := js.Stream(ctx, names.StepsStream())
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(names.ScheduleSubject(name))); err != nil {
		return fmt.Errorf("remove the schedule %s: %w", name, err)
	}
	return nil
}
