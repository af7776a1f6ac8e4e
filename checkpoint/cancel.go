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
// again is a no-op that reports false. ErrNotFound if there is no such run; *EndedError if
// the run already ended otherwise.
func (s *Store) Cancel(ctx context.Context, run, reason string) (bool, error) {
	if !workflow.ValidRunID(run) {
		return false, fmt.Errorf("%w: %q is not a run ID", ErrNotFound, workflow.OneLine(run, 80))
	}
	if _, err := s.Run(ctx, run); err != nil {
		return false, err
	}
	end, _, err := s.End(ctx, run)
	if err != nil {
		return false, err
	}
	if end != nil {
		if end.Status == EndCancelled {
			return false, nil
		}
		return false, &EndedError{Run: run, End: *end}
	}
	if reason == "" {
		reason = DefaultCancelReason
	}
	now := time.Now().UTC()
	// cancel.<run> first: a crash before the end leaves the run cancelled for workers, and a
	// second Cancel finishes the end.
	if _, err := put(ctx, s.runs, workflow.CancelKey(run), &Cancel{At: now, Reason: reason}, 0); err != nil && !errors.Is(err, ErrConflict) {
		return false, fmt.Errorf("cancel run %s: %w", run, err)
	}
	wrote, err := s.CreateEnd(ctx, run, &End{Status: EndCancelled, Reason: reason, At: now})
	if err != nil {
		return false, fmt.Errorf("end run %s: %w", run, err)
	}
	if wrote {
		return true, nil
	}
	// The run ended in between: report how.
	end, _, err = s.End(ctx, run)
	switch {
	case err != nil:
		return false, err
	case end == nil:
		return false, fmt.Errorf("%w: end.%s changed while cancelling; try again", ErrConflict, run)
	case end.Status == EndCancelled:
		return false, nil
	}
	return false, &EndedError{Run: run, End: *end}
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
