package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
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

// snapshot is a node state as this delivery last read or wrote it, with its revision: the
// next compare-and-set write is made at rev.
type snapshot struct {
	st  *checkpoint.Node // nil: the node was never tried
	rev uint64
}

// stepRun is one delivery of one step, from its read (step 2) to its ack (step 7).
type stepRun struct {
	w    *Worker
	ts   *typeState
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	env  *workflow.Envelope
	def  *workflow.Workflow
	node *workflow.Node
	log  *slog.Logger

	key  string          // the KV key of the state this step works on: its node's or its item's
	cur  snapshot        // the node state as last read or written
	with map[string]any  // the node's settings with expressions expanded (after the gate)
	item json.RawMessage // a for_each item's value, when it was loaded from a blob

	ticket *breaker.Ticket  // the breaker's admission, reported once the handler returns
	bs     breaker.Settings // the breaker settings the ticket is for

	took time.Duration // how long the handler ran
	// outage is when the node's breaker may half-open, set when the handler's retryable
	// failure found the key open: the failure is the dependency's, and costs no attempt.
	outage time.Time
	// detached is set once the work context ended while the step still had a result to
	// record: broker calls then use the step's own bounded context, not the shared one.
	detached bool

	runner     *runner   // the goroutine the step runs on
	claimed    *claimed  // this step's entry among the worker's steps in flight
	finish     func()    // lets go of the step's claim and slot
	finished   sync.Once // finish runs once: at the end, or when the handler is abandoned
	quarantine func()    // releases the crash-suspect slot this delivery holds; nil if none
	holds      int       // how many times backOff held the message after a broker error

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
// or (only after a crash, an ignored timeout, or a newer delivery of it elsewhere) to its
// ack wait.
func (w *Worker) process(ctx context.Context, ts *typeState, msg jetstream.Msg, r *runner, done func()) {
	if ts.starts {
		w.processStart(ctx, ts, msg, done)
		return
	}
	s := w.decode(ctx, ts, msg)
	if s == nil {
		done()
		return
	}
	s.runner = r
	if w.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = w.cfg.Tracer.Tracer("jetflow").Start(tracing.Extract(ctx, msg.Headers()), "step "+s.env.Workflow+"."+s.env.Node,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(tracing.AttrWorkflow.String(s.env.Workflow), tracing.AttrNode.String(s.env.Node), tracing.AttrRun.String(s.env.RunID)))
		defer span.End()
	}
	if !s.claim(ctx) {
		done()
		return
	}
	s.finish = func() {
		if s.quarantine != nil {
			s.quarantine()
		}
		w.unclaim(s.claimed)
		done()
	}
	defer s.letGo()
	for {
		err := s.run(ctx)
		if err == nil || errors.Is(err, errDead) || errors.Is(err, errUnknownRun) {
			return
		}
		if !s.backOff(ctx, err) {
			return
		}
	}
}

// decode is step 1: it decodes the message and finds its definition and node. A message
// that cannot be run goes to the DLQ (malformed) and is termed; nil means the message is
// dealt with.
func (w *Worker) decode(ctx context.Context, ts *typeState, msg jetstream.Msg) *stepRun {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("delivered message has no JetStream metadata", "type", ts.typ, "err", err)
		_ = msg.Term()
		return nil
	}
	env, err := workflow.DecodeEnvelope(msg.Data())
	if err != nil {
		w.malformed(ctx, ts, msg, meta, nil, err.Error())
		return nil
	}
	s := &stepRun{w: w, ts: ts, msg: msg, meta: meta, env: env}
	def, err := w.store.Definition(ctx, env.Def)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound) && meta.NumDelivered < definitionTries:
		// A replica behind a workflow applied a moment ago: the definition comes.
		s.logger().Info("definition not found yet; retrying", "def", env.Def, "delivery", meta.NumDelivered)
		s.handBackInfra(ctx, err)
		return nil
	case errors.Is(err, checkpoint.ErrNotFound):
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: unknown definition %s of workflow %s", env.Def[:12], env.Workflow))
		return nil
	case err != nil:
		s.logger().Warn("cannot read definition; retrying", "def", env.Def, "err", err)
		s.handBackInfra(ctx, err)
		return nil
	}
	node := def.Lookup(env.Node)
	switch {
	case def.Name != env.Workflow:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: definition %s is of workflow %s, not %s", env.Def[:12], def.Name, env.Workflow))
		return nil
	case node == nil:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: workflow %s has no node %s", env.Workflow, env.Node))
		return nil
	case node.Type != ts.typ:
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: node %s is of type %s, delivered as %s", env.Node, node.Type, ts.typ))
		return nil
	case env.IsItem() && node.ForEach == "":
		w.malformed(ctx, ts, msg, meta, env, fmt.Sprintf("malformed: step of item %d of node %s, which has no for_each", env.Index(), env.Node))
		return nil
	}
	s.def, s.node, s.key = def, node, checkpoint.StateKey(env)
	return s
}

// definitionTries is how many deliveries a step whose definition is not found is retried
// before it is malformed: a replica lagging behind a just-applied workflow catches up in
// well under the backoff of these tries (about 7 s).
const definitionTries = 5

// claim marks the step in flight in this worker, so two copies of one step never run here
// at once. It reports false when another delivery here holds the step; this one is then
// dealt with.
func (s *stepRun) claim(ctx context.Context) bool {
	key := s.idempotencyKey()
	cur, ok := s.w.claim(key, inflight{seq: s.meta.Sequence.Stream, dispatch: s.env.Dispatch, run: s.env.RunID})
	if ok {
		s.claimed = cur
		return true
	}
	switch {
	case cur.seq == s.meta.Sequence.Stream:
		// The same message again while this worker still works on it: that delivery will
		// ack, nak or term it.
	case cur.dispatch == s.env.Dispatch:
		// A second copy of a step in flight here. The live copy may still end without
		// finishing the step (a forged copy that came before its run's record goes to the
		// DLQ), so this one is handed back, not acknowledged: its next delivery finds the
		// step done (and only acknowledges) or runs it. Remembered here, that delivery
		// counts no crash.
		s.logger().Debug("copy of a step in flight handed back", "dispatch", s.env.Dispatch)
		s.w.rememberHandBack(s.meta.Sequence.Stream, s.meta.NumDelivered)
		_ = s.msg.NakWithDelay(time.Second)
	default:
		// Another dispatch of this step is in flight here (a stale original while its
		// schedule fires): hand this one back, marked, so its next delivery counts no crash.
		if err := s.read(ctx); err != nil {
			s.handBackInfra(ctx, err)
			return false
		}
		_ = s.handBack(ctx, time.Second)
	}
	return false
}

// run is steps 2–7 of DESIGN.md "Executing one step" for this delivery. Every write is a
// compare-and-set at the revision read; a write that loses re-reads and decides again.
func (s *stepRun) run(ctx context.Context) error {
	if err := s.read(ctx); err != nil {
		return err
	}
	if err := s.checkRun(ctx); err != nil {
		return err
	}
	s.countRunStart()
	gated := false
	for try := 0; ; try++ {
		if try == checkpoint.MaxCASRetries {
			return fmt.Errorf("%w: node state kept changing", checkpoint.ErrConflict)
		}
		if try > 0 {
			if err := s.read(ctx); err != nil {
				return err
			}
		}
		proceed, err := s.admit(ctx) // step 2
		if errors.Is(err, checkpoint.ErrConflict) {
			continue
		}
		if !proceed || err != nil {
			return err
		}
		if !gated { // control flow, then step 3, once per delivery
			if handled, err := s.control(ctx); errors.Is(err, checkpoint.ErrConflict) {
				continue
			} else if handled || err != nil {
				return err
			}
			if handled, err := s.gate(ctx); errors.Is(err, checkpoint.ErrConflict) {
				continue
			} else if handled || err != nil {
				return err
			}
			gated = true
			defer s.closeTicket(ctx)
		}
		if err := s.markRunning(ctx); errors.Is(err, checkpoint.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		break
	}
	return s.execute(ctx) // steps 4–7
}

// read reads the node state (step 2's one KV read, from the leader).
func (s *stepRun) read(ctx context.Context) error {
	st, rev, err := s.w.store.NodeAt(s.ops(ctx), s.key)
	if err != nil {
		return err
	}
	s.cur = snapshot{st: st, rev: rev}
	return nil
}

// write writes next at the revision last read or written, and makes it the current state.
func (s *stepRun) write(ctx context.Context, next checkpoint.Node) error {
	rev, err := s.w.store.PutNodeAt(s.ops(ctx), s.key, &next, s.cur.rev)
	if err != nil {
		return err
	}
	s.cur = snapshot{st: &next, rev: rev}
	return nil
}

// next is the state a write of this delivery starts from (see checkpoint.From).
func (s *stepRun) next() checkpoint.Node { return checkpoint.From(s.cur.st, s.env.Dispatch) }

// countRunStart reports the run's start: the first delivery of its first root, first seen
// (once per run, cluster-wide; a crash before it writes a state redelivers it with a higher
// delivery count).
func (s *stepRun) countRunStart() {
	if s.cur.st == nil && s.meta.NumDelivered == 1 && s.env.Dispatch == workflow.DispatchFirst && !s.env.IsItem() && s.def.FirstRoot() == s.env.Node {
		s.w.cfg.Observer.RunStarted(s.env.Workflow)
	}
}

// ops returns the context of a broker call on the step's hot path: the worker's shared
// deadline (see opsDeadline), or ctx itself when ctx carries a span to propagate, the
// worker is not running, or the step records past the end of the work context.
func (s *stepRun) ops(ctx context.Context) context.Context {
	if s.w.ops == nil || s.w.cfg.Tracer != nil || s.detached {
		return ctx
	}
	return s.w.ops.get()
}

// letGo lets go of the step's claim, quarantine and slot, once.
func (s *stepRun) letGo() { s.finished.Do(s.finish) }

// handBack returns the step to the stream unfinished (after delay), without spending an
// attempt. It first marks the node state with this message when the state holds no mark
// yet, so that the next delivery does not take the gap for a crash (see admit). A mark of
// this message is there already; a mark of another message (a copy running elsewhere) is
// not this delivery's to overwrite. The mark is best effort: when it cannot be written, this
// worker remembers the hand-back, and another worker's next delivery counts one crash too
// many.
func (s *stepRun) handBack(ctx context.Context, delay time.Duration) error {
	st, seq := s.cur.st, s.meta.Sequence.Stream
	if !st.Final() && dispatchOf(st) == s.env.Dispatch && (st == nil || st.Seq == 0) {
		if ctx.Err() != nil { // stopping: the mark is still worth a short try
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
		}
		if _, err := s.w.store.PutNodeAt(ctx, s.key, new(s.next().HandedBack(s.meta.NumDelivered, seq)), s.cur.rev); err != nil {
			s.logger().Debug("cannot mark a step handed back; its next delivery will count a crash", "err", err)
			s.w.rememberHandBack(seq, s.meta.NumDelivered)
		}
	}
	if delay > 0 {
		return s.msg.NakWithDelay(delay)
	}
	return s.msg.Nak()
}

// backOff deals with an infrastructure error (a KV or stream call that failed) of this
// delivery. Far from MaxDeliver it hands the step back with a delay that grows with the
// delivery count, capped below AckWait/2, and reports false. Near MaxDeliver, where one
// more delivery could make the sweeper dead-letter a step that never crashed, it keeps the
// message alive (InProgress) through the same delay and reports true: run it again.
func (s *stepRun) backOff(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		s.handBackInfra(context.WithoutCancel(ctx), err)
		return false
	}
	if int(s.meta.NumDelivered) < s.ts.maxDeliver-5 {
		s.handBackInfra(ctx, err)
		return false
	}
	s.holds++
	delay := infraDelay(uint64(s.holds), s.ts.ackWait)
	s.logger().Warn("step not finished (broker error); holding it and trying again", "delivery", s.meta.NumDelivered, "wait", delay, "err", err)
	t := time.NewTicker(max(s.ts.ackWait/3, 100*time.Millisecond))
	defer t.Stop()
	wake := time.NewTimer(delay)
	defer wake.Stop()
	for {
		_ = s.msg.InProgress()
		select {
		case <-ctx.Done():
			s.handBackInfra(context.WithoutCancel(ctx), err)
			return false
		case <-wake.C:
			return true
		case <-t.C:
		}
	}
}

// handBackInfra hands the step back after an infrastructure error, with a delay that grows
// with the delivery count (see infraDelay), marking the state when it can (a failed mark
// is remembered in this worker: see rememberHandBack).
func (s *stepRun) handBackInfra(ctx context.Context, err error) {
	delay := infraDelay(s.meta.NumDelivered, s.ts.ackWait)
	s.logger().Warn("step not finished (broker error); it will be delivered again", "delivery", s.meta.NumDelivered, "wait", delay, "err", err)
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if s.read(mctx) != nil { // the state is read again: the failed call may have written it
		s.w.rememberHandBack(s.meta.Sequence.Stream, s.meta.NumDelivered)
		_ = s.msg.NakWithDelay(delay)
		return
	}
	_ = s.handBack(mctx, delay)
}

// infraDelay is the wait before delivery n+1 after an infrastructure error of delivery n:
// 500 ms doubling, with ±20 % jitter, capped below AckWait/2.
func infraDelay(n uint64, ackWait time.Duration) time.Duration {
	d := 500 * time.Millisecond << min(max(n, 1)-1, 10)
	d = min(d, max(ackWait/2-ackWait/10, 100*time.Millisecond))
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// malformed sends an undecodable or invalid message to the DLQ, then terms it.
func (w *Worker) malformed(ctx context.Context, ts *typeState, msg jetstream.Msg, meta *jetstream.MsgMetadata, env *workflow.Envelope, reason string) {
	if !strings.HasPrefix(reason, "malformed") {
		reason = "malformed: " + strings.TrimPrefix(reason, "malformed: ")
	}
	f := dlq.Failure{Reason: reason, Worker: w.cfg.ID, StreamSeq: meta.Sequence.Stream, Subject: msg.Subject(), Error: reason}
	if env != nil {
		f.Workflow, f.Node, f.RunID = env.Workflow, env.Node, env.RunID
	} else {
		f.Workflow, f.Node, f.RunID = w.whatItSays(msg)
	}
	if _, err := dlq.Publish(ctx, w.js, w.cfg.Names, msg.Data(), f); err != nil {
		w.log.Error("cannot move malformed message to the DLQ; retrying", "type", ts.typ, "err", err)
		_ = msg.NakWithDelay(infraDelay(meta.NumDelivered, ts.ackWait))
		return
	}
	w.log.Warn("malformed message moved to the DLQ", "type", ts.typ, "subject", msg.Subject(), "reason", reason)
	_ = msg.Term()
}

// whatItSays is what an undecodable step message still tells: its workflow and node from its
// subject (<prefix>.step.<type>.<workflow>.<node>), and its run when the body is JSON with a
// valid run_id. An operator then finds the entry by run and workflow like any other.
func (w *Worker) whatItSays(msg jetstream.Msg) (wf, node, run string) {
	if rest, ok := strings.CutPrefix(msg.Subject(), w.cfg.Names.Prefix()+".step."); ok {
		if parts := strings.Split(rest, "."); len(parts) == 3 {
			wf, node = parts[1], parts[2]
		}
	}
	var body struct {
		RunID string `json:"run_id"`
	}
	if json.Unmarshal(msg.Data(), &body) == nil && workflow.ValidRunID(body.RunID) {
		run = body.RunID
	}
	return wf, node, run
}
