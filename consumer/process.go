package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// errDead means a test hook stopped the worker dead: write nothing more, ack nothing.
var errDead = errors.New("worker stopped dead by a test hook")

// Crash points, named for tests.
const (
	pointDLQPublished  = "dlq-published"  // step 5c: after the DLQ publish, before CAS dead
	pointDeadWritten   = "dead-written"   // step 5c: after CAS dead, before end
	pointEndWritten    = "end-written"    // step 5c: after end, before Term
	pointJoinComplete  = "join-complete"  // step 6: after the completing join write, before the child publish
	pointScheduled     = "scheduled"      // deferring: after the schedule publish, before the Ack
	pointDoneWritten   = "done-written"   // step 5a: after CAS done, before fan-out
	pointSinksComplete = "sinks-complete" // step 6: after the completing sinks write, before end
	pointHandlerDone   = "handler-done"   // step 4: after the handler returned, before any write
)

// stepRun is one delivery of one step.
type stepRun struct {
	w    *Worker
	ts   *typeState
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	env  *workflow.Envelope
	def  *workflow.Workflow
	node *workflow.Node
	log  *slog.Logger
	with map[string]any // the node's settings with expressions expanded

	took time.Duration // how long the handler ran
	// outage is when the node's breaker may half-open, set when the handler's retryable
	// failure found the key open: the failure is the dependency's, and costs no attempt.
	outage time.Time

	runner   *runner   // the goroutine the step runs on
	finish   func()    // lets go of the step's claim and slot
	finished sync.Once // finish runs once: at the end, or when the handler is abandoned

	progressMu   sync.Mutex
	progressRev  uint64 // revision of progress.<run>.<node> this attempt last saw
	progressUsed bool   // the handler read or saved progress
}

// logger returns the step's logger, made on first use (the happy path logs nothing).
func (s *stepRun) logger() *slog.Logger {
	if s.log == nil {
		s.log = s.w.log.With("run_id", s.env.RunID, "workflow", s.env.Workflow, "node", s.env.Node)
	}
	return s.log
}

// process runs the state machine for one delivered message on runner r, and calls done
// once when the worker may take another step (at the end, or earlier when the handler
// ignores its timeout). It never panics and always leaves the message acked, termed, nak'd
// or (only after a crash or an ignored timeout) to its ack wait.
func (w *Worker) process(ctx context.Context, ts *typeState, msg jetstream.Msg, r *runner, done func()) {
	handedOver := false // to the stepRun, once it holds the claim
	defer func() {
		if !handedOver {
			done()
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("delivered message has no JetStream metadata", "type", ts.typ, "err", err)
		_ = msg.Term()
		return
	}
	env, err := workflow.DecodeEnvelope(msg.Data())
	if err != nil {
		w.malformed(ctx, ts, msg, meta, nil, err.Error())
		return
	}
	def, err := w.store.Definition(ctx, env.Def)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: unknown definition %s of workflow %s", env.Def[:12], env.Workflow))
		return
	case err != nil:
		w.log.Warn("cannot read definition; retrying", "def", env.Def, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	node := def.Lookup(env.Node)
	switch {
	case def.Name != env.Workflow:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: definition %s is of workflow %s, not %s", env.Def[:12], def.Name, env.Workflow))
		return
	case node == nil:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: workflow %s has no node %s", env.Workflow, env.Node))
		return
	case node.Type != ts.typ:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: node %s is of type %s, delivered as %s", env.Node, node.Type, ts.typ))
		return
	}
	if w.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = w.cfg.Tracer.Tracer("jetflow").Start(tracing.Extract(ctx, msg.Headers()), "step "+env.Workflow+"."+env.Node,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(tracing.AttrWorkflow.String(env.Workflow), tracing.AttrNode.String(env.Node), tracing.AttrRun.String(env.RunID)))
		defer span.End()
	}
	s := &stepRun{w: w, ts: ts, msg: msg, meta: meta, env: env, def: def, node: node, runner: r}
	key := workflow.IdempotencyKey(env.RunID, env.Node)
	if cur, ok := w.claim(key, inflight{seq: meta.Sequence.Stream, dispatch: env.Dispatch}); !ok {
		switch {
		case cur.seq == meta.Sequence.Stream:
			// The same message again while this worker still works on it: that delivery
			// will ack, nak or term it.
		case cur.dispatch == env.Dispatch:
			// A second copy of a step in flight here: the live copy finishes the step.
			s.logger().Debug("duplicate of a step in flight acknowledged", "dispatch", env.Dispatch)
			w.cfg.Observer.StepFinished(env.Workflow, env.Node, node.Type, OutcomeSkippedDuplicate, 0)
			_ = msg.Ack()
		default:
			// Another dispatch of this step is in flight here (a stale original while its
			// schedule fires): hand this one back, marked, so its next delivery counts no crash.
			st, rev, err := w.store.Node(ctx, env.RunID, env.Node)
			if err != nil {
				_ = msg.NakWithDelay(time.Second)
				return
			}
			_ = s.handBack(ctx, st, rev, time.Second)
		}
		return
	}
	handedOver = true
	s.finish = func() { w.unclaim(key); done() }
	defer s.letGo()
	if err := s.run(ctx); err != nil {
		if errors.Is(err, errDead) {
			return
		}
		s.logger().Warn("step not finished; it will be delivered again", "err", err)
		_ = msg.NakWithDelay(time.Second)
	}
}

// ops returns the context of a broker call on the step's hot path: the worker's shared
// deadline (see opsDeadline), or ctx itself when ctx carries a span to propagate or the
// worker is not running.
func (s *stepRun) ops(ctx context.Context) context.Context {
	if s.w.ops == nil || s.w.cfg.Tracer != nil {
		return ctx
	}
	return s.w.ops.get()
}

// handBack returns the step to the stream unfinished (after delay), without spending an
// attempt. It first marks the node state with this message when the state holds no mark of
// it yet, so that the next delivery does not take the gap for a crash (see run). The mark
// is best effort: if it cannot be written, the next delivery counts one crash too many.
func (s *stepRun) handBack(ctx context.Context, st *checkpoint.Node, rev uint64, delay time.Duration) error {
	if seq := s.meta.Sequence.Stream; !st.Final() && dispatchOf(st) == s.env.Dispatch && (st == nil || st.Seq != seq) {
		next := s.nextState(st)
		next.Delivery, next.Seq = s.meta.NumDelivered, seq
		if ctx.Err() != nil { // stopping: the mark is still worth a short try
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
		}
		if _, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev); err != nil {
			s.logger().Debug("cannot mark a step handed back; its next delivery will count a crash", "err", err)
		}
	}
	if delay > 0 {
		return s.msg.NakWithDelay(delay)
	}
	return s.msg.Nak()
}

// letGo lets go of the step's claim and slot, once.
func (s *stepRun) letGo() { s.finished.Do(s.finish) }

// nextState is the node state a write of this delivery starts from: a copy of st, or, for a
// node with no state yet, a pending state of the envelope's dispatch. A running state comes
// back retrying; every caller then sets what it writes.
func (s *stepRun) nextState(st *checkpoint.Node) checkpoint.Node {
	if st == nil {
		return checkpoint.Node{Status: checkpoint.StatusRetrying, Dispatch: s.env.Dispatch}
	}
	next := *st
	if next.Status == checkpoint.StatusRunning {
		next.Status = checkpoint.StatusRetrying
	}
	return next
}

// malformed sends an undecodable or invalid message to the DLQ, then terms it.
func (w *Worker) malformed(ctx context.Context, ts *typeState, msg jetstream.Msg, meta *jetstream.MsgMetadata, env *workflow.Envelope, reason string) {
	if !strings.HasPrefix(reason, "malformed") {
		reason = "malformed: " + strings.TrimPrefix(reason, "malformed: ")
	}
	f := dlq.Failure{Reason: reason, Worker: w.cfg.ID, StreamSeq: meta.Sequence.Stream, Subject: msg.Subject(), Error: reason}
	if env != nil {
		f.Workflow, f.Node, f.RunID = env.Workflow, env.Node, env.RunID
	}
	if _, err := dlq.Publish(ctx, w.js, w.cfg.Names, msg.Data(), f); err != nil {
		w.log.Error("cannot move malformed message to the DLQ; retrying", "type", ts.typ, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	w.log.Warn("malformed message moved to the DLQ", "type", ts.typ, "subject", msg.Subject(), "reason", reason)
	_ = msg.Term()
}

func (s *stepRun) run(ctx context.Context) error {
	st, rev, err := s.w.store.Node(s.ops(ctx), s.env.RunID, s.env.Node)
	if err != nil {
		return err
	}
	if st == nil && s.meta.NumDelivered == 1 && s.env.Dispatch == workflow.DispatchFirst && s.def.FirstRoot() == s.env.Node {
		// The run's first step, first seen: the run started (once per run, cluster-wide; a
		// crash before it writes a state redelivers it with a higher delivery count).
		s.w.cfg.Observer.RunStarted(s.env.Workflow)
	}
	wroteRunning, gated := false, false
	var (
		before  *checkpoint.Node // the state before this delivery marked it running
		with    map[string]any
		ticket  *breaker.Ticket
		bs      breaker.Settings
		release func() // the quarantine slot of a crash suspect
	)
	for try := 0; ; try++ {
		if try == checkpoint.MaxCASRetries {
			return fmt.Errorf("%w: node state kept changing", checkpoint.ErrConflict)
		}
		if try > 0 {
			if st, rev, err = s.w.store.Node(ctx, s.env.RunID, s.env.Node); err != nil {
				return err
			}
		}
		if done, err := s.settled(ctx, st); done || err != nil {
			return err
		}
		if s.w.cancelled(s.env.RunID) {
			return s.msg.Ack()
		}
		if want := dispatchOf(st); s.env.Dispatch != want {
			return s.stale(ctx, st)
		}
		if !gated {
			gated = true
			if with, err = s.expandWith(inputOf(s.env, st)); err != nil {
				return s.deadLetter(ctx, st, rev, attemptsOf(st), "permanent error", err.Error())
			}
			var handled bool
			if ticket, bs, handled, err = s.gate(ctx, st, rev, with); handled || err != nil {
				return err
			}
			defer func() {
				if ticket != nil { // not reported: the handler never ran
					ticket.Done(ctx, breaker.ErrExcluded)
				}
			}()
		}
		n := s.meta.NumDelivered
		if st != nil && st.Seq != 0 && st.Seq != s.meta.Sequence.Stream {
			// Another copy of this step (another message with the same dispatch) holds it:
			// marked running by it, or handed back by it and coming back. That message is
			// live elsewhere, waits in the stream, or will be redelivered if its worker
			// died. This copy is a duplicate, not a crash.
			s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeSkippedDuplicate, 0)
			return s.msg.Ack()
		}
		seq := s.meta.Sequence.Stream
		// The previous delivery crashed or timed out while it ran the handler: it marked
		// the step running (a redelivery), or it left no mark at all (a first delivery
		// writes nothing before its handler, and every deliberate hand-back marks the
		// state with its message first; see handBack). A mark of another message was
		// handled above.
		crashed := st != nil && st.Status == checkpoint.StatusRunning && st.Delivery != n
		untraced := n > 1 && (st == nil || st.Status != checkpoint.StatusRunning && st.Seq == 0)
		if crashed || untraced {
			crashes := 1
			if st != nil {
				crashes = st.Crashes + 1
			}
			if crashes >= s.node.MaxCrashesOrDefault() {
				reason := fmt.Sprintf("worker crashed or timed out %d times on this step", crashes)
				errText := reason
				if st != nil {
					errText = cmpOr(st.LastError, reason)
				}
				return s.deadLetter(ctx, st, rev, attemptsOf(st), reason, errText)
			}
			s.w.cfg.Observer.StepRerun(s.env.Workflow, s.env.Node)
			lastSeq, lastDelivery := uint64(0), uint64(0)
			if st != nil {
				lastSeq, lastDelivery = st.Seq, st.Delivery
			}
			s.logger().Warn("step delivered again after its worker crashed or timed out", "delivery", n, "stream_seq", seq,
				"crashes", crashes, "marked_running", crashed, "state_seq", lastSeq, "state_delivery", lastDelivery)
			// Count the crash, and mark the step not running but seen by this message: a
			// crash while it waits for the quarantine below is not its own.
			next := s.nextState(st)
			next.Crashes = crashes
			next.Status, next.Delivery, next.Seq = checkpoint.StatusRetrying, n, seq
			r, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev)
			if errors.Is(err, checkpoint.ErrConflict) {
				continue
			} else if err != nil {
				return err
			}
			st, rev = &next, r
		}
		if st != nil && st.Crashes > 0 && release == nil {
			// A step that was running when a worker died runs alone in this worker (one
			// crash suspect at a time), so a poison step cannot take innocent steps down
			// with it again and again until their crash counts reach the DLQ.
			if release = s.w.quarantine(ctx, s.msg, s.ts.ackWait); release == nil {
				return s.handBack(ctx, st, rev, 0)
			}
			defer release()
			continue // the state may have moved while this delivery waited
		}
		if n > 1 {
			// A redelivery: mark the attempt running first so a crash during it is counted.
			next := s.nextState(st)
			next.Status = checkpoint.StatusRunning
			next.Delivery, next.Seq, next.Worker, next.StartedAt = n, s.meta.Sequence.Stream, s.w.cfg.ID, time.Now().UTC()
			r, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev)
			if errors.Is(err, checkpoint.ErrConflict) {
				continue
			} else if err != nil {
				return err
			}
			before, st, rev, wroteRunning = st, &next, r, true
		}
		break
	}

	attempt := attemptsOf(st) + 1
	step := &Step{
		RunID: s.env.RunID, Workflow: s.env.Workflow, Node: s.env.Node, Type: s.node.Type,
		IdempotencyKey: workflow.IdempotencyKey(s.env.RunID, s.env.Node), With: with,
		Attempt: attempt, Input: inputOf(s.env, st), run: s,
	}
	if st != nil {
		step.NotBefore = st.NotBefore
	}
	startedAt := time.Now().UTC()

	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrAttempt.Int(attempt))
		defer func() {
			if step.err != nil {
				span.RecordError(step.err)
				span.SetStatus(codes.Error, workflow.OneLine(step.err.Error(), 200))
			}
		}()
	}
	out, herr, abandoned := s.invokeWith(ctx, s.ts.handler, step)
	step.err = herr
	if !abandoned {
		s.reportBreaker(ctx, ticket, bs, herr)
		ticket = nil
	}
	if abandoned {
		return errDead // nothing more to write or ack: the ack wait redelivers it
	}
	if s.w.at(pointHandlerDone) {
		return errDead
	}
	if herr != nil && ctx.Err() != nil {
		// Shutdown is not a failure: hand the step back, unspent.
		if wroteRunning {
			restore := s.nextState(before)
			restore.Delivery, restore.Seq = s.meta.NumDelivered, s.meta.Sequence.Stream // handed back, not crashed
			_, _ = s.w.store.PutNode(context.WithoutCancel(ctx), s.env.RunID, s.env.Node, &restore, rev)
			_ = s.msg.Nak()
			return nil
		}
		return s.handBack(context.WithoutCancel(ctx), st, rev, 0)
	}
	if herr != nil && errors.Is(herr, ErrRunCancelled) || s.w.cancelled(s.env.RunID) && herr != nil {
		return s.msg.Ack()
	}
	return s.recordWith(ctx, st, rev, attempt, startedAt, out, herr, with)
}

// attemptsOf is the number of attempts a node state has used.
func attemptsOf(st *checkpoint.Node) int {
	if st == nil {
		return 0
	}
	return st.Attempts
}

// inputOf is the input the node receives: an operator's edit, or the envelope's.
func inputOf(env *workflow.Envelope, st *checkpoint.Node) json.RawMessage {
	if st != nil && len(st.Input) > 0 {
		return st.Input
	}
	return env.Input
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// dispatchOf is the dispatch token the live message of a node must carry.
func dispatchOf(st *checkpoint.Node) string {
	if st == nil || st.Dispatch == "" {
		return workflow.DispatchFirst
	}
	return st.Dispatch
}

// settled handles a node whose state is final (step 2's first branches): done fans out again
// and acks; dead makes sure the run's end exists and terms. It reports whether it did.
func (s *stepRun) settled(ctx context.Context, st *checkpoint.Node) (bool, error) {
	switch {
	case st == nil:
		return false, nil
	case st.Status == checkpoint.StatusDone:
		if s.meta.NumDelivered > 1 {
			// Redelivered after done: the delivery that wrote done may have died before it
			// deleted the progress.
			s.dropProgress(ctx, st.Attempts)
		}
		if err := s.fanOut(ctx, st.Output); err != nil {
			return true, err
		}
		s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeSkippedDuplicate, 0)
		return true, s.msg.Ack()
	case st.Status == checkpoint.StatusDead:
		if _, err := s.w.store.CreateEnd(ctx, s.env.RunID, &checkpoint.End{Status: checkpoint.EndFailed, Reason: s.endReason(st.Reason), At: time.Now().UTC()}); err != nil {
			return true, err
		}
		return true, s.msg.Term()
	}
	return false, nil
}

func (s *stepRun) endReason(reason string) string {
	return fmt.Sprintf("node %s: %s", s.env.Node, cmpOr(reason, "dead"))
}

// stale handles a message whose dispatch is not the one the state waits for: it re-publishes
// what the state says is pending (deduplicated) and acks.
func (s *stepRun) stale(ctx context.Context, st *checkpoint.Node) error {
	if st != nil && st.Status == checkpoint.StatusRetrying {
		env := *s.env
		env.Dispatch = st.Dispatch
		switch {
		case strings.HasPrefix(st.Dispatch, "s"):
			if _, err := producer.Schedule(ctx, s.w.js, s.w.cfg.Names, s.node.Type, &env, st.Sched, st.NotBefore); err != nil {
				return err
			}
		case strings.HasPrefix(st.Dispatch, "r"):
			if _, err := producer.Publish(ctx, s.w.js, s.w.cfg.Names, s.node.Type, &env); err != nil {
				return err
			}
		}
	}
	s.logger().Debug("stale step message acknowledged", "dispatch", s.env.Dispatch, "want", dispatchOf(st))
	return s.msg.Ack()
}

type result struct {
	out []byte
	err error
}

// invokeWith runs handler on this goroutine with the node's timeout, sending heartbeats
// while it runs. A handler that outlives its timeout by HeartbeatGrace is abandoned: the
// step lets go of its claim and slot at that moment, so the worker goes on, its message is
// left to the ack wait, and when the handler returns at last invokeWith reports abandoned
// and its result is dropped.
//
// One timer watches the handler (heartbeats and the hard limit); no goroutine, ticker or
// channel per step: the handler is the step's hot path.
func (s *stepRun) invokeWith(ctx context.Context, handler HandlerFunc, step *Step) (out []byte, err error, abandoned bool) {
	timeout := s.node.TimeoutOrDefault()
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	untrack := s.w.track(s.env.RunID, cancel)
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

// recordWith is record for the node's own handler: attempts used up, it tries the fallbacks.
func (s *stepRun) recordWith(ctx context.Context, st *checkpoint.Node, rev uint64, attempt int, startedAt time.Time, out []byte, herr error, with map[string]any) error {
	s.with = with
	return s.record(ctx, st, rev, attempt, startedAt, out, herr, false)
}

// record writes the attempt's outcome (step 5) and acts on it, retrying on CAS conflicts.
// fallback marks a result that came from a fallback type.
func (s *stepRun) record(ctx context.Context, st *checkpoint.Node, rev uint64, attempt int, startedAt time.Time, out []byte, herr error, fallback bool) error {
	if herr == nil && len(out) > s.w.cfg.MaxOutputBytes {
		herr = Permanent(fmt.Errorf("output is %d bytes, over the %d-byte limit", len(out), s.w.cfg.MaxOutputBytes))
	}
	for try := 0; try < checkpoint.MaxCASRetries; try++ {
		if try > 0 {
			var err error
			if st, rev, err = s.w.store.Node(ctx, s.env.RunID, s.env.Node); err != nil {
				return err
			}
			if done, err := s.settled(ctx, st); done || err != nil {
				return err
			}
		}
		base := s.nextState(st)
		base.Worker, base.StartedAt, base.Delivery, base.Seq = s.w.cfg.ID, startedAt, 0, 0
		var err error
		if herr == nil {
			base.Fallback = fallback
			err = s.done(ctx, base, rev, attempt, out)
		} else {
			err = s.failed(ctx, base, rev, attempt, herr)
		}
		if errors.Is(err, checkpoint.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("%w: node state kept changing", checkpoint.ErrConflict)
}

// done records success (5a), fans out (6) and acks (7).
func (s *stepRun) done(ctx context.Context, next checkpoint.Node, rev uint64, attempt int, out []byte) error {
	next.Status, next.Attempts, next.Output = checkpoint.StatusDone, attempt, out
	next.EndedAt, next.NotBefore, next.LastError = time.Now().UTC(), time.Time{}, ""
	if _, err := s.w.store.PutNode(s.ops(ctx), s.env.RunID, s.env.Node, &next, rev); err != nil {
		return err
	}
	outcome := OutcomeSucceeded
	if next.Fallback {
		outcome = OutcomeFallback
	}
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, outcome, s.took)
	if s.w.at(pointDoneWritten) {
		return errDead
	}
	s.dropProgress(ctx, attempt)
	if err := s.fanOut(ctx, out); err != nil {
		return err
	}
	return s.msg.Ack()
}

// failed records a failed attempt (5b, 5c) or a park.
func (s *stepRun) failed(ctx context.Context, next checkpoint.Node, rev uint64, attempt int, herr error) error {
	kind, after, until := classify(herr)
	msg := herr.Error()
	switch kind {
	case outcomePark:
		return s.deferStep(ctx, next, rev, time.Until(until), until)
	case outcomePermanent:
		return s.deadLetter(ctx, &next, rev, attempt, "permanent error", msg)
	}
	if kind == outcomeRetry && !s.outage.IsZero() {
		// The dependency is out (this failure tripped its breaker, or found it tripped): wait
		// for the breaker, with the attempt given back, as steps that never ran do. A node
		// with fallbacks comes back at once and runs them (the key is open).
		wait := time.Until(s.outage)
		if len(s.node.Fallback) > 0 {
			wait = 0
		}
		next.Attempts, next.LastError = attempt-1, msg
		s.logger().Info("attempt failed and its breaker is open: not counted; waits for the breaker",
			"attempt", attempt, "wait", wait, "err", workflow.OneLine(msg, 300))
		s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeferredBreaker, s.took)
		return s.deferStep(ctx, next, rev, max(wait, 10*time.Millisecond), time.Now().Add(wait))
	}
	policy := s.node.RetryPolicy()
	if attempt >= policy.MaxAttempts {
		reason := fmt.Sprintf("attempts exhausted (%d of %d)", attempt, policy.MaxAttempts)
		if len(s.node.Fallback) > 0 {
			st := next
			st.Attempts = attempt - 1 // the fallback result records the attempt it replaces
			done, err := s.fallback(ctx, &st, rev, s.with, reason)
			if done || err != nil {
				return err
			}
			reason += "; every fallback failed"
		}
		return s.deadLetter(ctx, &next, rev, attempt, reason, msg)
	}
	wait := policy.Backoff(attempt)
	if kind == outcomeRetryAfter {
		wait = after
	}
	next.Attempts, next.LastError = attempt, msg
	s.logger().Info("attempt failed; will retry", "attempt", attempt, "wait", wait, "err", workflow.OneLine(msg, 300))
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeRetried, s.took)
	return s.deferStep(ctx, next, rev, wait, time.Now().Add(wait))
}

// deferStep makes the step wait (DESIGN.md "Deferring"): a short wait is a NakWithDelay; a
// long one, or any once the delivery count nears MaxDeliver, takes the schedule path, which
// holds no ack-pending slot and resets the delivery count.
func (s *stepRun) deferStep(ctx context.Context, next checkpoint.Node, rev uint64, wait time.Duration, until time.Time) error {
	wait = max(wait, 0)
	next.Status, next.NotBefore = checkpoint.StatusRetrying, until.UTC()
	short := wait < s.ts.ackWait/2 && int(s.meta.NumDelivered) < s.ts.maxDeliver-5
	if short {
		next.Delivery, next.Seq = s.meta.NumDelivered, s.meta.Sequence.Stream // handed back, not crashed
		if _, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev); err != nil {
			return err
		}
		return s.msg.NakWithDelay(wait)
	}
	next.Sched++
	next.Delivery, next.Seq = 0, 0
	next.Dispatch = workflow.DispatchSchedule(next.Sched)
	if _, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev); err != nil {
		return err
	}
	env := *s.env
	env.Dispatch = next.Dispatch
	if _, err := producer.Schedule(ctx, s.w.js, s.w.cfg.Names, s.node.Type, &env, next.Sched, until); err != nil {
		return err
	}
	if s.w.at(pointScheduled) {
		return errDead
	}
	return s.msg.Ack()
}

// deadLetter is step 5c: DLQ publish first, then CAS dead, then the run's end, then Term.
func (s *stepRun) deadLetter(ctx context.Context, st *checkpoint.Node, rev uint64, attempts int, reason, errText string) error {
	seq, err := dlq.Publish(ctx, s.w.js, s.w.cfg.Names, s.msg.Data(), dlq.Failure{
		Workflow: s.env.Workflow, Node: s.env.Node, RunID: s.env.RunID,
		Reason: reason, Error: errText, Attempts: attempts, Worker: s.w.cfg.ID,
		StreamSeq: s.meta.Sequence.Stream, Subject: s.msg.Subject(),
	})
	if err != nil {
		return err
	}
	if s.w.at(pointDLQPublished) {
		return errDead
	}
	next := s.nextState(st)
	next.Status, next.Attempts, next.LastError, next.Reason, next.DLQSeq = checkpoint.StatusDead, attempts, errText, reason, seq
	next.EndedAt, next.Delivery, next.Seq, next.NotBefore = time.Now().UTC(), 0, 0, time.Time{}
	if next.Worker == "" {
		next.Worker = s.w.cfg.ID
	}
	if _, err := s.w.store.PutNode(ctx, s.env.RunID, s.env.Node, &next, rev); err != nil {
		return err
	}
	s.logger().Warn("step moved to the DLQ", "attempt", attempts, "reason", reason, "dlq_id", seq, "err", workflow.OneLine(errText, 300))
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeadLettered, s.took)
	if s.w.at(pointDeadWritten) {
		return errDead
	}
	if err := s.endRun(ctx, checkpoint.EndFailed, s.endReason(reason)); err != nil {
		return err
	}
	if s.w.at(pointEndWritten) {
		return errDead
	}
	return s.msg.Term()
}

// fanOut publishes the children this node releases (step 6), deciding joins with CAS writes
// only, and ends the run when the last sink is done.
func (s *stepRun) fanOut(ctx context.Context, out []byte) error {
	children := s.def.Children(s.env.Node)
	if len(children) == 0 {
		return s.sinkDone(ctx)
	}
	var runInput json.RawMessage
	for _, c := range children {
		child := s.def.Lookup(c)
		nodes := map[string]json.RawMessage{s.env.Node: out}
		if len(child.Needs) > 1 {
			complete, err := s.w.store.Join(s.ops(ctx), workflow.JoinKey(s.env.RunID, c), s.env.Node, child.Needs)
			if err != nil {
				return err
			}
			if !complete {
				continue
			}
			if s.w.at(pointJoinComplete) {
				return errDead
			}
			for _, p := range child.Needs {
				if p == s.env.Node {
					continue
				}
				pst, _, err := s.w.store.Node(s.ops(ctx), s.env.RunID, p)
				if err != nil {
					return err
				}
				if pst == nil || pst.Status != checkpoint.StatusDone {
					return fmt.Errorf("join of %s is complete but parent %s is not done", c, p)
				}
				nodes[p] = pst.Output
			}
		}
		if runInput == nil {
			var in struct { // only the run input: the parents' outputs need no decoding
				Input json.RawMessage `json:"input"`
			}
			if err := json.Unmarshal(s.env.Input, &in); err != nil || in.Input == nil {
				in.Input = json.RawMessage("null")
			}
			runInput = in.Input
		}
		input, err := producer.EncodeNodeInput(runInput, nodes)
		if err != nil {
			return err
		}
		env := &workflow.Envelope{RunID: s.env.RunID, Workflow: s.env.Workflow, Def: s.env.Def, Node: c, Input: input, Dispatch: workflow.DispatchFirst}
		if _, err := producer.Publish(s.ops(ctx), s.w.js, s.w.cfg.Names, child.Type, env); err != nil {
			return err
		}
	}
	return nil
}

// sinkDone joins this sink into sinks.<run> and ends the run completed when all are done.
func (s *stepRun) sinkDone(ctx context.Context) error {
	sinks := s.def.Sinks()
	if len(sinks) > 1 {
		complete, err := s.w.store.Join(s.ops(ctx), workflow.SinksKey(s.env.RunID), s.env.Node, sinks)
		if err != nil || !complete {
			return err
		}
		if s.w.at(pointSinksComplete) {
			return errDead
		}
	}
	return s.endRun(ctx, checkpoint.EndCompleted, "")
}

// endRun creates the run's end (an existing one is kept) and, when this call wrote it,
// reports the run's duration.
func (s *stepRun) endRun(ctx context.Context, status, reason string) error {
	at := time.Now().UTC()
	created, err := s.w.store.CreateEnd(s.ops(ctx), s.env.RunID, &checkpoint.End{Status: status, Reason: reason, At: at})
	if err != nil || !created {
		return err
	}
	if _, nop := s.w.cfg.Observer.(nopObserver); nop {
		return nil // nobody measures run durations: spare the read
	}
	if r, err := s.w.store.Run(ctx, s.env.RunID); err == nil {
		s.w.cfg.Observer.RunFinished(s.env.Workflow, status, at.Sub(r.Created))
	}
	return nil
}
