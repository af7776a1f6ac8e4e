package consumer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// admit is step 2: from the node state just read it decides whether this delivery runs the
// handler. It finishes the delivery itself (proceed false) for a node already done or dead,
// a cancelled run, a stale dispatch, a copy of a step another message holds, a stale copy of
// a message delivered again since, or a step that crashed its workers max_crashes times.
// Otherwise it counts a crash the previous delivery left behind, takes this worker's
// quarantine slot for a crash suspect, and reports proceed. A compare-and-set that lost is
// returned as checkpoint.ErrConflict: read again and decide again.
func (s *stepRun) admit(ctx context.Context) (proceed bool, err error) {
	st, n, seq := s.cur.st, s.meta.NumDelivered, s.meta.Sequence.Stream
	if done, err := s.settled(ctx); done || err != nil {
		return false, err
	}
	if s.w.cancelled(s.env.RunID) {
		return s.cancelledRun(ctx)
	}
	if s.env.Dispatch != dispatchOf(st) {
		return false, s.stale(ctx)
	}
	if s.resumable() {
		return false, s.resume(ctx)
	}
	if workflow.IsWake(s.msg.Headers().Get(workflow.HeaderMsgID)) {
		// A wake that came before its node parked: the child ended (or the signal came)
		// while the node's own step was still on its way — in flight, or redelivered after
		// its worker died. The wake carries no input, so it must not start the node; the
		// node's own step parks it and then finds the end itself.
		s.logger().Debug("wake before the node parked; the node's own step will find the end")
		return false, s.msg.Ack()
	}
	switch {
	case st != nil && st.Seq != 0 && st.Seq != seq:
		// Another copy of this step (another message with the same dispatch) holds it:
		// marked running by it, or handed back by it and coming back. That message is live
		// elsewhere, waits in the stream, or will be redelivered if its worker died. This
		// copy is a duplicate, not a crash.
		s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeSkippedDuplicate, 0)
		return false, s.msg.Ack()
	case st != nil && st.Seq == seq && st.Delivery > n:
		// This message was delivered again since this copy was (its ack wait ran out before
		// it got here): the newer delivery holds the step. This copy is no crash and must not
		// run beside it; it is left alone, neither acked nor given back, so the newer one
		// decides.
		s.logger().Warn("stale copy of a message delivered again since; left to the newer delivery", "delivery", n, "newer", st.Delivery)
		return false, nil
	}
	if s.crashedBefore() {
		if proceed, err := s.countCrash(ctx); !proceed || err != nil {
			return false, err
		}
		st = s.cur.st
	}
	if s.meta.NumDelivered == 1 && strings.HasPrefix(s.env.Dispatch, "r") && attemptsOf(st) == 0 {
		s.countSaved(ctx) // the first delivery of a DLQ replay: the run resumes
	}
	if st != nil && st.Crashes > 0 && s.quarantine == nil {
		// A step that was running when a worker died runs alone in this worker (one crash
		// suspect at a time), so a poison step cannot take innocent steps down with it again
		// and again until their crash counts reach the DLQ.
		release, ok := s.w.quarantine(ctx, s.msg, s.ts.ackWait)
		if !ok {
			return false, s.handBack(ctx, time.Second)
		}
		s.quarantine = release
		return false, checkpoint.ErrConflict // the state may have moved while this delivery waited: read again
	}
	return true, nil
}

// crashedBefore reports whether the previous delivery of this message crashed or timed out
// while it ran the handler: it marked the step running (a redelivery), or it left no mark at
// all (a first delivery writes nothing before its handler, and every deliberate hand-back
// marks the state with its message first, or is remembered by this worker when it could
// not; see handBack). A mark of another message, or of a newer delivery, was dealt with.
func (s *stepRun) crashedBefore() bool {
	st, n := s.cur.st, s.meta.NumDelivered
	switch {
	case st != nil && st.Status == checkpoint.StatusRunning && st.Delivery != n:
		return true
	case n > 1 && (st == nil || st.Status != checkpoint.StatusRunning && st.Seq == 0):
		return !s.w.handedBack(s.meta.Sequence.Stream, n)
	}
	return false
}

// countCrash counts the crash the previous delivery left, or dead-letters the step at
// max_crashes (the order of step 5c). The step is then marked held by this delivery, not
// running: a crash while it waits for the quarantine is not its own.
func (s *stepRun) countCrash(ctx context.Context) (proceed bool, err error) {
	st, n, seq := s.cur.st, s.meta.NumDelivered, s.meta.Sequence.Stream
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
		return false, s.deadLetter(ctx, s.next(), attemptsOf(st), reason, errText)
	}
	s.w.cfg.Observer.StepRerun(s.env.Workflow, s.env.Node)
	var lastSeq, lastDelivery uint64
	if st != nil {
		lastSeq, lastDelivery = st.Seq, st.Delivery
	}
	s.logger().Warn("step delivered again after its worker crashed or timed out", "delivery", n, "stream_seq", seq,
		"crashes", crashes, "marked_running", st != nil && st.Status == checkpoint.StatusRunning, "state_seq", lastSeq, "state_delivery", lastDelivery)
	if err := s.write(ctx, s.next().CrashCounted(crashes, n, seq)); err != nil {
		return false, err
	}
	s.countSaved(ctx)
	return true, nil
}

// countSaved counts what the done nodes of a run that resumes after a failure cost in model
// calls (jetflow_cost_saved_usd_total, and the run's saved_usd): a run without checkpoints
// would pay for them again. Best effort, on the failure path only: one read for a run
// without model calls.
func (s *stepRun) countSaved(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sp, err := s.w.store.Spend(ctx, s.env.RunID)
	if err != nil || sp.USD == 0 {
		return
	}
	states, err := s.w.store.NodeStates(ctx, s.env.RunID)
	if err != nil {
		return
	}
	var saved float64
	for key, ns := range sp.Nodes {
		name, _, _ := strings.Cut(key, "[") // a for_each item's key is <node>[<index>]
		if st := states[name]; name != s.env.Node && st != nil && st.Status == checkpoint.StatusDone {
			saved += ns.USD
		}
	}
	if saved <= 0 {
		return
	}
	if err := s.w.store.AddSaved(ctx, s.env.RunID, saved); err != nil {
		s.logger().Debug("cannot record the cost saved", "err", err)
	}
	s.w.cfg.Observer.CostSaved(s.env.Workflow, saved)
}

// markRunning is step 2's last write: on a redelivery the attempt is marked running first,
// so a crash during it is counted. A first delivery writes nothing before its handler.
func (s *stepRun) markRunning(ctx context.Context) error {
	if s.meta.NumDelivered <= 1 {
		return nil
	}
	return s.write(ctx, s.next().Running(s.meta.NumDelivered, s.meta.Sequence.Stream, s.w.cfg.ID, time.Now().UTC()))
}

// settled handles a node whose state is final (step 2's first branches): done fans out again
// and acks; dead makes sure the run's end exists and terms. It reports whether it did.
func (s *stepRun) settled(ctx context.Context) (bool, error) {
	st := s.cur.st
	switch {
	case st == nil:
		return false, nil
	case s.env.IsItem() && st.Status == checkpoint.StatusDone:
		if err := s.itemFinished(ctx, false, ""); err != nil {
			return true, err
		}
		s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeSkippedDuplicate, 0)
		return true, s.msg.Ack()
	case s.env.IsItem() && st.Status == checkpoint.StatusDead:
		if err := s.itemFinished(ctx, true, st.Reason); err != nil {
			return true, err
		}
		return true, s.msg.Term()
	case st.Settled():
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
		if err := s.endRun(ctx, checkpoint.EndFailed, s.endReason(st.Reason)); err != nil {
			return true, err
		}
		return true, s.msg.Term()
	}
	return false, nil
}

// cancelledRun handles a step of a run whose cancel key this worker saw. The step is
// dropped (acked without running) only once the run's end says cancelled: a cancel writes
// its key first and the end next, and takes the key back when the run ended otherwise
// first, so a step seen between those writes is handed back for a moment instead. A cancel
// that lost to another end never drops a step (a replay of the run's dead node then finds
// every branch intact).
func (s *stepRun) cancelledRun(ctx context.Context) (bool, error) {
	end, _, err := s.w.store.End(s.ops(ctx), s.env.RunID)
	switch {
	case err != nil:
		return false, err
	case end == nil:
		return false, s.handBack(ctx, time.Second) // the cancel's end comes next
	case end.Status == checkpoint.EndCancelled:
		s.logger().Debug("step of a cancelled run dropped")
		return false, s.msg.Ack()
	}
	return true, nil // the run ended otherwise: the cancel is being taken back
}

// stale handles a message whose dispatch is not the one the state waits for: it re-publishes
// what the state says is pending (deduplicated) and acks.
func (s *stepRun) stale(ctx context.Context) error {
	st := s.cur.st
	if st != nil && st.Status == checkpoint.StatusWaiting && st.Signal != "" {
		// A wait node's first step again (its worker died after marking it waiting): its
		// timeout may never have been scheduled.
		if err := s.scheduleWaitTimeout(ctx, st); err != nil {
			return err
		}
	}
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

// attemptsOf is the number of attempts a node state has used.
func attemptsOf(st *checkpoint.Node) int {
	if st == nil {
		return 0
	}
	return st.Attempts
}

// dispatchOf is the dispatch token the live message of a node must carry.
func dispatchOf(st *checkpoint.Node) string {
	if st == nil || st.Dispatch == "" {
		return workflow.DispatchFirst
	}
	return st.Dispatch
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// endReason is the run's end reason when node dies with reason.
func (s *stepRun) endReason(reason string) string {
	return fmt.Sprintf("node %s: %s", s.env.Node, cmpOr(reason, "dead"))
}
