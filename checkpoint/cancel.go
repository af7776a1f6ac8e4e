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

// Cancel cancels a run (DESIGN.md "Replay, cancel, fail"): it ends the run cancelled, then
// creates cancel.<run>, which workers watch to cancel the run's running handlers and skip its
// queued steps. It reports whether this call cancelled the run: cancelling a cancelled run
// again reports false (and writes cancel.<run> if a crash left it out). ErrNotFound if there
// is no such run; *EndedError if the run already ended otherwise.
//
// The end comes first, with Create, so a run that fails or completes at the same moment is
// never left with cancel.<run>: workers never forget a cancel they saw, so a cancel key on a
// run that ended otherwise would stop its live branches and refuse its DLQ replays for good.
// A crash between the two writes leaves a cancelled end without the key: the run is ended for
// readers, replays of it are refused, and the next Cancel writes the key.
func (s *Store) Cancel(ctx context.Context, run, reason string) (bool, error) {
	return s.cancel(ctx, run, reason, nil)
}

// pointCancelEnded is the crash point between the cancelled end and cancel.<run>.
const pointCancelEnded = "cancel-ended"

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
	c := Cancel{At: time.Now().UTC(), Reason: reason}
	wrote := false
	for try := 0; ; try++ {
		if try == MaxCASRetries {
			return false, fmt.Errorf("%w: end.%s changed while cancelling; try again", ErrConflict, run)
		}
		var err error
		if wrote, err = s.CreateEnd(ctx, run, &End{Status: EndCancelled, Reason: c.Reason, At: c.At}); err != nil {
			return false, fmt.Errorf("end run %s: %w", run, err)
		}
		if wrote {
			break
		}
		end, _, err := s.End(ctx, run)
		if err != nil {
			return false, err
		}
		if end == nil {
			continue // deleted meanwhile (a replay reopened the run): try again
		}
		if end.Status != EndCancelled {
			return false, &EndedError{Run: run, End: *end}
		}
		c = Cancel{At: end.At, Reason: end.Reason} // cancelled already: make sure of the key
		break
	}
	if hook != nil && hook(pointCancelEnded) {
		return false, errStopped
	}
	if _, err := put(ctx, s.runs, workflow.CancelKey(run), &c, 0); err != nil && !errors.Is(err, ErrConflict) {
		return false, fmt.Errorf("cancel run %s: %w", run, err)
	}
	return wrote, nil
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
