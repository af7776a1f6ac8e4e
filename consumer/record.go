package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// recordHeld records a handler's outcome (record), holding on to it through broker errors:
// the handler ran and its result is worth more than a redelivery that would run it again.
// The message is kept alive (InProgress) between tries, whose waits grow as infraDelay's. It
// gives up only when the work context ends (and, past it, when the record's own bound
// does): the step is then handed back.
func (s *stepRun) recordHeld(ctx context.Context, a checkpoint.Attempt, out []byte, herr error) error {
	for try := uint64(1); ; try++ {
		err := s.record(ctx, a, out, herr, false)
		if err == nil || errors.Is(err, errDead) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		delay := infraDelay(try, s.ts.ackWait)
		s.logger().Warn("cannot record the step's outcome; holding it and trying again", "try", try, "wait", delay, "err", err)
		if !s.hold(ctx, delay) {
			return err
		}
		if err := s.read(ctx); err != nil {
			continue
		}
	}
}

// hold keeps the message alive for d; false when ctx ended first.
func (s *stepRun) hold(ctx context.Context, d time.Duration) bool {
	beat := time.NewTicker(max(s.ts.ackWait/3, 100*time.Millisecond))
	defer beat.Stop()
	wake := time.NewTimer(d)
	defer wake.Stop()
	for {
		_ = s.msg.InProgress()
		select {
		case <-ctx.Done():
			return false
		case <-wake.C:
			return true
		case <-beat.C:
		}
	}
}

// record is step 5: it writes the attempt's outcome with compare-and-set on the node state
// and acts on it (done → fan out and ack; failure → retry, park or DLQ). A write that loses
// reads again: a state that became final is dealt with as step 2 would; a state that moved
// to another dispatch (a newer delivery scheduled a retry, an operator replayed the step)
// makes this delivery stale: it writes nothing over it. fallback marks a result that came
// from a fallback type.
func (s *stepRun) record(ctx context.Context, a checkpoint.Attempt, out []byte, herr error, fallback bool) error {
	if herr == nil && len(out) > s.w.cfg.MaxPayload {
		herr = Permanent(fmt.Errorf("%w: output is %d bytes; the limit is %d bytes (worker --max-payload)", checkpoint.ErrTooLarge, len(out), s.w.cfg.MaxPayload))
	}
	for try := 0; try < checkpoint.MaxCASRetries; try++ {
		if try > 0 {
			if err := s.read(ctx); err != nil {
				return err
			}
		}
		if done, err := s.settled(ctx); done || err != nil {
			return err
		}
		if s.env.Dispatch != dispatchOf(s.cur.st) {
			return s.stale(ctx)
		}
		if st := s.cur.st; herr != nil && st != nil && st.Status == checkpoint.StatusRunning && st.Seq != s.meta.Sequence.Stream {
			// Another copy of the step runs it now: its outcome decides, not this failure.
			return s.msg.Ack()
		}
		var err error
		if herr == nil {
			err = s.done(ctx, a, out, fallback)
		} else {
			err = s.failed(ctx, a, herr)
		}
		if !errors.Is(err, checkpoint.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: node state kept changing", checkpoint.ErrConflict)
}

// done is step 5a: it records success, then fans out (6) and acks (7).
func (s *stepRun) done(ctx context.Context, a checkpoint.Attempt, out []byte, fallback bool) error {
	out, err := s.w.store.Offload(s.ops(ctx), s.env.RunID, out, s.w.cfg.InlineLimit)
	if err != nil {
		return err
	}
	if err := s.write(ctx, s.next().Done(a, out, fallback, time.Now().UTC())); err != nil {
		return err
	}
	outcome := OutcomeSucceeded
	if fallback {
		outcome = OutcomeFallback
	}
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, outcome, s.took)
	if s.w.at(pointDoneWritten) {
		return errDead
	}
	s.dropProgress(ctx, a.Number)
	if s.env.IsItem() {
		if s.w.at(pointItemDone) {
			return errDead
		}
		if err := s.itemFinished(ctx, false, ""); err != nil {
			return err
		}
		return s.msg.Ack()
	}
	if err := s.fanOut(ctx, out); err != nil {
		return err
	}
	return s.msg.Ack()
}

// failed is steps 5b and 5c: a failed attempt retries after its backoff, parks, or goes to
// the DLQ (after the fallbacks, when the node has some).
func (s *stepRun) failed(ctx context.Context, a checkpoint.Attempt, herr error) error {
	kind, after, until := classify(herr)
	msg := herr.Error()
	switch kind {
	case outcomePark:
		return s.deferStep(ctx, s.next().Started(a), until) // a park spends no attempt
	case outcomePermanent:
		reason := "permanent error"
		if pe := (*PermanentError)(nil); errors.As(herr, &pe) && pe.Reason != "" {
			reason = workflow.OneLine(pe.Reason, 200)
		}
		return s.deadLetter(ctx, s.next().Started(a), a.Number, reason, msg)
	}
	if kind == outcomeRetry && !s.outage.IsZero() {
		// The dependency is out (this failure tripped its breaker, or found it tripped): wait
		// for the breaker, with the attempt given back, as steps that never ran do. A node
		// with fallbacks comes back at once and runs them (the key is open).
		wait := time.Until(s.outage)
		if len(s.node.Fallback) > 0 {
			wait = 0
		}
		s.logger().Info("attempt failed and its breaker is open: not counted; waits for the breaker",
			"attempt", a.Number, "wait", wait, "err", workflow.OneLine(msg, 300))
		s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeferredBreaker, s.took)
		return s.deferStep(ctx, s.next().Failed(a, a.Number-1, msg), time.Now().Add(max(wait, 10*time.Millisecond)))
	}
	policy := s.node.RetryPolicy()
	if a.Number >= policy.MaxAttempts {
		reason := fmt.Sprintf("attempts exhausted (%d of %d)", a.Number, policy.MaxAttempts)
		if len(s.node.Fallback) > 0 {
			// The fallback's result records the attempt it replaces.
			if done, err := s.fallback(ctx, a.Number, reason); done || err != nil {
				return err
			}
			reason += "; every fallback failed"
		}
		return s.deadLetter(ctx, s.next().Started(a), a.Number, reason, msg)
	}
	wait := policy.Backoff(a.Number)
	if kind == outcomeRetryAfter {
		wait = after
	}
	s.logger().Info("attempt failed; will retry", "attempt", a.Number, "wait", wait, "err", workflow.OneLine(msg, 300))
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeRetried, s.took)
	return s.deferStep(ctx, s.next().Failed(a, a.Number, msg), time.Now().Add(wait))
}

// deferStep writes next and makes the step wait until until (DESIGN.md "Deferring"): a short
// wait is a NakWithDelay; a long one, or any once the delivery count nears MaxDeliver, takes
// the schedule path, which holds no ack-pending slot and resets the delivery count.
func (s *stepRun) deferStep(ctx context.Context, next checkpoint.Node, until time.Time) error {
	wait := max(time.Until(until), 0)
	if s.shortWait(wait) {
		if err := s.write(ctx, next.Retry(until, s.meta.NumDelivered, s.meta.Sequence.Stream)); err != nil {
			return err
		}
		return s.msg.NakWithDelay(wait)
	}
	next = next.Scheduled(until)
	if err := s.write(ctx, next); err != nil {
		return err
	}
	env := *s.env
	env.Dispatch = next.Dispatch
	if _, err := producer.Schedule(s.ops(ctx), s.w.js, s.w.cfg.Names, s.node.Type, &env, next.Sched, until); err != nil {
		return err
	}
	if s.w.at(pointScheduled) {
		return errDead
	}
	return s.msg.Ack()
}

// shortWait reports whether a wait is short enough for a NakWithDelay.
func (s *stepRun) shortWait(wait time.Duration) bool {
	return wait < s.ts.ackWait/2 && int(s.meta.NumDelivered) < s.ts.maxDeliver-5
}

// deadLetter is step 5c: DLQ publish first, then CAS dead (from the state from), then the
// run's end, then Term.
func (s *stepRun) deadLetter(ctx context.Context, from checkpoint.Node, attempts int, reason, errText string) error {
	seq, err := dlq.Publish(ctx, s.w.js, s.w.cfg.Names, s.msg.Data(), dlq.Failure{
		Workflow: s.env.Workflow, Node: s.env.Node, RunID: s.env.RunID,
		Reason: reason, Error: errText, Attempts: attempts, Worker: s.w.cfg.ID,
		StreamSeq: s.meta.Sequence.Stream, Subject: s.msg.Subject(), Item: s.env.Item,
	})
	if err != nil {
		return err
	}
	if s.w.at(pointDLQPublished) {
		return errDead
	}
	if err := s.write(ctx, from.Dead(attempts, reason, errText, seq, s.w.cfg.ID, time.Now().UTC())); err != nil {
		return err
	}
	s.logger().Warn("step moved to the DLQ", "attempt", attempts, "reason", reason, "dlq_id", seq, "err", workflow.OneLine(errText, 300))
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeadLettered, s.took)
	if s.w.at(pointDeadWritten) {
		return errDead
	}
	if s.env.IsItem() {
		if s.w.at(pointItemDone) {
			return errDead
		}
		if err := s.itemFinished(ctx, true, reason); err != nil {
			return err
		}
		if s.w.at(pointEndWritten) {
			return errDead
		}
		return s.msg.Term()
	}
	if err := s.endRun(ctx, checkpoint.EndFailed, s.endReason(reason)); err != nil {
		return err
	}
	if s.w.at(pointEndWritten) {
		return errDead
	}
	return s.msg.Term()
}
