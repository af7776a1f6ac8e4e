package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// execute is steps 4–7 for an admitted delivery: it runs the handler (invoke), then records
// the outcome, fans out and acks (record).
func (s *stepRun) execute(ctx context.Context) error {
	st := s.cur.st
	attempt := attemptsOf(st) + 1
	a := checkpoint.Attempt{Number: attempt, Worker: s.w.cfg.ID, StartedAt: time.Now().UTC()}
	input, err := s.w.store.LoadNodeInput(s.ops(ctx), s.env.RunID, inputOf(s.env, st), s.w.cfg.MaxPayload)
	if err != nil {
		if errors.Is(err, checkpoint.ErrBlobMissing) || errors.Is(err, checkpoint.ErrBlobCorrupt) || errors.Is(err, checkpoint.ErrTooLarge) {
			// No retry brings a blob back or makes it fit: the node fails, its handler unrun.
			return s.recordHeld(ctx, a, nil, Permanent(fmt.Errorf("input: %w", err)))
		}
		return err
	}
	step := &Step{
		RunID: s.env.RunID, Workflow: s.env.Workflow, Node: s.env.Node, Type: s.node.Type,
		IdempotencyKey: s.idempotencyKey(), With: s.with,
		Attempt: attempt, Input: input, run: s, Index: s.env.Index(), Budget: s.def.BudgetUSD(),
	}
	if s.env.IsItem() {
		step.Item = s.itemValue()
		step.Input = withItem(input, step.Item, step.Index)
	}
	if st != nil {
		step.NotBefore = st.NotBefore
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrAttempt.Int(attempt))
		defer func() {
			if step.err != nil {
				span.RecordError(step.err)
				span.SetStatus(codes.Error, workflow.OneLine(step.err.Error(), 200))
			}
		}()
	}
	out, herr, abandoned := s.invoke(ctx, s.ts.handler, step)
	step.err = herr
	if abandoned {
		return errDead // nothing more to write or ack: the ack wait redelivers it
	}
	s.reportBreaker(ctx, s.ticket, s.bs, herr)
	s.ticket = nil
	if s.w.at(pointHandlerDone) {
		return errDead
	}
	switch {
	case herr != nil && ctx.Err() != nil:
		// Shutdown is not a failure: hand the step back, unspent.
		return s.handBack(context.WithoutCancel(ctx), 0)
	case herr != nil && (errors.Is(herr, ErrRunCancelled) || s.w.cancelled(s.env.RunID)):
		return s.msg.Ack()
	}
	if ctx.Err() != nil {
		// The drain timeout cancelled the work, and the handler returned its result anyway:
		// record it, on a context of its own.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		s.detached = true
	}
	return s.recordHeld(ctx, a, out, herr)
}

// recordTimeout bounds the recording of a result that outlived the work context.
const recordTimeout = 10 * time.Second

// inputOf is the input the node receives: an operator's edit, or the envelope's.
func inputOf(env *workflow.Envelope, st *checkpoint.Node) json.RawMessage {
	if st != nil && len(st.Input) > 0 {
		return st.Input
	}
	return env.Input
}

// invoke is step 4: it runs handler on this goroutine with the node's timeout, sending heartbeats
// while it runs. A handler that outlives its timeout by HeartbeatGrace is abandoned: the
// step lets go of its claim and slot at that moment, so the worker goes on, its message is
// left to the ack wait, and when the handler returns at last invoke reports abandoned
// and its result is dropped.
//
// One timer watches the handler (heartbeats and the hard limit); no goroutine, ticker or
// channel per step: the handler is the step's hot path.
func (s *stepRun) invoke(ctx context.Context, handler HandlerFunc, step *Step) (out []byte, err error, abandoned bool) {
	timeout := s.node.TimeoutOrDefault()
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	untrack := s.track(cancel)
	defer untrack()
	tctx, cancelT := context.WithTimeout(hctx, timeout)
	defer cancelT()

	s.w.cfg.Observer.StepStarted(s.env.Workflow, s.env.Node, s.node.Type, time.Since(s.meta.Timestamp))
	began := time.Now()
	wd := s.watch(began, timeout+s.w.grace(), step.Attempt)
	defer func() {
		s.took = time.Since(began)
		if !wd.returned() {
			out, err, abandoned = nil, nil, true
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			s.logger().Error("handler panicked", "panic", r, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	v, err := handler(tctx, step)
	if err != nil {
		if tctx.Err() == context.DeadlineExceeded && hctx.Err() == nil {
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		if cause := context.Cause(hctx); errors.Is(cause, ErrRunCancelled) {
			err = fmt.Errorf("%w: %w", ErrRunCancelled, err)
		}
		return nil, err, false
	}
	out, err = marshalOutput(v)
	return out, err, false
}

// Watchdog states.
const (
	handlerRunning int32 = iota
	handlerReturned
	handlerAbandoned
)

// watchdog sends a running handler's heartbeats and abandons it past its hard limit.
type watchdog struct {
	s       *stepRun
	began   time.Time
	hard    time.Duration // abandon the handler this long after began
	every   time.Duration // heartbeat interval
	state   atomic.Int32
	mu      sync.Mutex // guards t against the timer's own callback
	t       *time.Timer
	attempt int
}

// watch starts the watchdog of a handler that began at began.
func (s *stepRun) watch(began time.Time, hard time.Duration, attempt int) *watchdog {
	wd := &watchdog{s: s, began: began, hard: hard, every: max(s.ts.ackWait/3, 100*time.Millisecond), attempt: attempt}
	wd.mu.Lock()
	wd.t = time.AfterFunc(min(wd.every, hard), wd.fire)
	wd.mu.Unlock()
	return wd
}

// fire runs on the timer: a heartbeat, or the abandonment.
func (wd *watchdog) fire() {
	if wd.state.Load() != handlerRunning {
		return
	}
	left := wd.hard - time.Since(wd.began)
	if left <= 0 {
		if wd.state.CompareAndSwap(handlerRunning, handlerAbandoned) {
			s := wd.s
			s.w.cfg.Observer.HandlerAbandoned(s.env.Workflow, s.env.Node)
			s.logger().Error("handler ignored its timeout; leaving the step to the ack wait", "attempt", wd.attempt, "timeout", s.node.TimeoutOrDefault())
			s.runner.detach()
			s.letGo()
		}
		return
	}
	_ = wd.s.msg.InProgress()
	wd.mu.Lock()
	wd.t.Reset(min(wd.every, left))
	wd.mu.Unlock()
}

// returned stops the watchdog when the handler returns; false when it had abandoned the
// handler already.
func (wd *watchdog) returned() bool {
	wd.mu.Lock()
	wd.t.Stop()
	wd.mu.Unlock()
	return wd.state.CompareAndSwap(handlerRunning, handlerReturned)
}

// track makes an operator's cancel of the run cancel the handler's context (with cause
// ErrRunCancelled) while it runs; the returned func stops that. The cancel lives on the
// step's claim, which the cancel watch finds: no lock on the step's path.
func (s *stepRun) track(cancel context.CancelCauseFunc) func() {
	c := s.claimed
	if c == nil {
		return func() {}
	}
	c.cancel.Store(&cancel)
	if s.w.cancelled(s.env.RunID) {
		cancel(ErrRunCancelled)
	}
	return func() { c.cancel.Store(nil) }
}

func marshalOutput(v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return []byte("null"), nil
	case json.RawMessage:
		if !json.Valid(x) {
			return nil, Permanent(errors.New("handler returned a json.RawMessage that is not valid JSON"))
		}
		return x, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, Permanent(fmt.Errorf("output cannot be encoded as JSON: %w", err))
	}
	return b, nil
}
