package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Signal is what signal.<run>.<name> holds: the data a signal carried, or the mark of a
// wait that timed out before any signal came. Whichever is created first is the only
// outcome: the key is written with Create, never updated.
type Signal struct {
	// Data is the signal's data (null when it carried none).
	Data json.RawMessage `json:"data,omitempty"`
	// TimedOut marks the wait node's timeout, which refuses later signals.
	TimedOut bool `json:"timed_out,omitempty"`
	// At is when it was written.
	At time.Time `json:"at"`
}

// ReadSignal reads a run's signal name; nil when none was sent and no wait timed out.
func (s *Store) ReadSignal(ctx context.Context, run, name string) (*Signal, error) {
	var sig Signal
	_, err := get(ctx, s.runs, workflow.SignalKey(run, name), &sig)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &sig, nil
}

// PutSignal records sig as the run's signal name unless one is recorded: it returns the
// recorded one, which is sig when this call wrote it.
func (s *Store) PutSignal(ctx context.Context, run, name string, sig *Signal) (*Signal, bool, error) {
	sig.At = time.Now().UTC()
	_, err := put(ctx, s.runs, workflow.SignalKey(run, name), sig, 0)
	if errors.Is(err, ErrConflict) {
		got, err := s.ReadSignal(ctx, run, name)
		if err == nil && got == nil {
			err = errors.New("signal " + name + " of run " + run + " was deleted while it was written")
		}
		return got, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return sig, true, nil
}
