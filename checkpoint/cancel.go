package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// DefaultCancelReason is the end reason of a run cancelled without a reason.
const DefaultCancelReason = "cancelled by an operator"

// EndedError means a run has already ended, so it cannot be cancelled.
type EndedError struct {
	// Run is the run's ID.
	Run string
	// End is how it ended.
	End End
}

func (e *EndedError) Error() string {
	msg := fmt.Sprintf("run %s already ended %s", e.Run, e.End.Status)
	if e.End.Reason != "" {
		msg += " (" + e.End.Reason + ")"
	}
	return msg
}

// Cancel cancels a run (DESIGN.md "Replay, cancel, fail"): it creates cancel.<run>, which
// workers watch to cancel the run's running handlers and skip its queued steps, then ends the
// run cancelled. It reports whether this call cancelled the run: cancelling a cancelled run
// again reports false (and finishes what a crash left half done). ErrNotFound if there is no
// such run; *EndedError if the run already ended otherwise.
//
// A run that fails or completes at the same moment wins the end: Cancel then deletes the
// cancel.<run> it wrote (at the revision it wrote), so a run that ended otherwise is not left
// with a cancel key, which would refuse its DLQ replays for good; workers forget a cancel
// whose key is deleted. A crash between the two writes leaves the key without the end: the
// run's steps are skipped, and the next Cancel ends it.
func (s *Store) Cancel(ctx context.Context, run, reason string) (bool, error) {
	return s.cancel(ctx, run, reason, nil)
}

// pointCancelKeyed is the crash point between cancel.<run> and the cancelled end.
const pointCancelKeyed = "cancel-keyed"

// errStopped means a test hook stopped a cancel dead at its crash point.
var errStopped = errors.New("stopped dead by a test hook")

// cancel is Cancel with a test hook (nil outside tests) called at the crash point; returning
// true stops it dead there.
func (s *Store) cancel(ctx context.Context, run, reason string, hook func(point string) bool) (bool, error) {
	if !workflow.ValidRunID(run) {
		return false, fmt.Errorf("%w: %q is not a run ID", ErrNotFound, workflow.OneLine(run, 80))
	}
	if _, err := s.Run(ctx, run); err != nil {
		return false, err
	}
	if reason == "" {
		reason = DefaultCancelReason
	}
	// An end already there: a cancelled run is finished below; any other end is refused
	// before a key is written, and a key an interrupted cancel left is taken back.
	if end, _, err := s.End(ctx, run); err != nil {
		return false, err
	} else if end != nil && end.Status != EndCancelled {
		var left Cancel
		if rev, err := get(ctx, s.runs, workflow.CancelKey(run), &left); err == nil {
			return false, s.takeBackCancel(ctx, run, rev, end)
		}
		return false, &EndedError{Run: run, End: *end}
	}
	c := Cancel{At: time.Now().UTC(), Reason: reason}
	keyRev, err := put(ctx, s.runs, workflow.CancelKey(run), &c, 0)
	if errors.Is(err, ErrConflict) {
		// Cancelled already, or a cancel is under way: its reason stands.
		if keyRev, err = get(ctx, s.runs, workflow.CancelKey(run), &c); err != nil && !errors.Is(err, ErrNotFound) {
			return false, err
		}
	} else if err != nil {
		return false, fmt.Errorf("cancel run %s: %w", run, err)
	}
	if hook != nil && hook(pointCancelKeyed) {
		return false, errStopped
	}
	for try := 0; ; try++ {
		if try == MaxCASRetries {
			return false, fmt.Errorf("%w: end.%s changed while cancelling; try again", ErrConflict, run)
		}
		wrote, err := s.CreateEnd(ctx, run, &End{Status: EndCancelled, Reason: c.Reason, At: c.At})
		if err != nil {
			return false, fmt.Errorf("end run %s: %w", run, err)
		}
		if wrote {
			return true, s.cancelChildren(ctx, run, hook)
		}
		end, _, err := s.End(ctx, run)
		if err != nil {
			return false, err
		}
		switch {
		case end == nil:
			continue // deleted meanwhile (a replay reopened the run): try again
		case end.Status == EndCancelled:
			return false, s.cancelChildren(ctx, run, hook)
		}
		// The run ended otherwise first: take the cancel back.
		return false, s.takeBackCancel(ctx, run, keyRev, end)
	}
}

// cancelChildren cancels the subflow runs a cancelled run started, and theirs in turn. A
// child's ID is derived from its node and dispatch, so a child whose start request is still
// waiting is found too: it has no record yet, and the worker that takes its request sees the
// parent cancelled and cancels it then.
func (s *Store) cancelChildren(ctx context.Context, run string, hook func(point string) bool) error {
	r, err := s.Run(ctx, run)
	if err != nil {
		return err
	}
	def, err := s.Definition(ctx, r.Def)
	if errors.Is(err, ErrNotFound) {
		return nil // no definition, no subflow nodes (the run's steps go to the DLQ as malformed)
	}
	if err != nil {
		return err
	}
	for _, n := range def.Nodes {
		if n.Type != workflow.SubflowType {
			continue
		}
		st, _, err := s.Node(ctx, run, n.Name)
		if err != nil {
			return err
		}
		if st == nil || st.Final() {
			continue
		}
		child := st.Child
		if child == "" {
			child = workflow.ChildRunID(run, n.Name, st.Dispatch)
		}
		var ended *EndedError
		if _, err := s.cancel(ctx, child, "parent run "+run+" was cancelled", hook); err != nil && !errors.Is(err, ErrNotFound) && !errors.As(err, &ended) {
			return fmt.Errorf("cancel subflow %s of run %s: %w", child, run, err)
		}
	}
	return nil
}

// takeBackCancel deletes cancel.<run> at revision rev (0: nothing to delete) from a run that
// ended otherwise, and returns the *EndedError that refuses the cancel. A key rewritten
// meanwhile is another cancel's to settle.
func (s *Store) takeBackCancel(ctx context.Context, run string, rev uint64, end *End) error {
	if rev != 0 {
		if err := s.runs.Delete(ctx, workflow.CancelKey(run), jetstream.LastRevision(rev)); err != nil &&
			!errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("run %s ended %s, and its cancel key could not be removed: %w", run, end.Status, err)
		}
	}
	return &EndedError{Run: run, End: *end}
}

// DeleteEnd deletes a run's end if it is still at revision rev (ErrConflict otherwise), so
// the run is running again, as a DLQ replay does for a failed run.
func (s *Store) DeleteEnd(ctx context.Context, run string, rev uint64) error {
	if rev == 0 {
		return fmt.Errorf("%w: delete end.%s needs the revision read", ErrConflict, run)
	}
	err := s.runs.Delete(ctx, workflow.EndKey(run), jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s", ErrConflict, workflow.EndKey(run))
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", workflow.EndKey(run), err)
	}
	return nil
}
