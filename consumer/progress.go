package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// progressKey is the KV key of this step's progress.
func (s *stepRun) progressKey() string { return workflow.ProgressKey(s.env.RunID, s.progressNode()) }

// progressNode is the node part of the progress key: the node's name, and for a for_each
// item "<node>.i<index>".
func (s *stepRun) progressNode() string {
	if s.env.IsItem() {
		return s.env.Node + ".i" + strconv.Itoa(s.env.Index())
	}
	return s.env.Node
}

// loadProgress reads the saved progress and remembers its revision for the next save.
func (s *stepRun) loadProgress(ctx context.Context) ([]byte, error) {
	s.progressMu.Lock()
	defer s.progressMu.Unlock()
	s.progressUsed = true
	e, err := checkpoint.Read(ctx, s.w.store.KV(), s.progressKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		s.progressRev = 0
		return nil, ErrNoProgress
	}
	if err != nil {
		return nil, fmt.Errorf("read progress: %w", err)
	}
	s.progressRev = e.Revision()
	return e.Value(), nil
}

// saveProgress writes the progress with compare-and-set against the revision this attempt
// last saw (a crashed attempt's leftover is taken over once), and sends a heartbeat.
func (s *stepRun) saveProgress(ctx context.Context, b []byte) error {
	s.progressMu.Lock()
	defer s.progressMu.Unlock()
	s.progressUsed = true
	kv := s.w.store.KV()
	for range 3 {
		var err error
		var rev uint64
		if s.progressRev == 0 {
			rev, err = kv.Create(ctx, s.progressKey(), b)
		} else {
			rev, err = kv.Update(ctx, s.progressKey(), b, s.progressRev)
		}
		if err == nil {
			s.progressRev = rev
			_ = s.msg.InProgress()
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("save progress: %w", err)
		}
		e, gerr := checkpoint.Read(ctx, kv, s.progressKey())
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
			s.progressRev = 0
		case gerr != nil:
			return fmt.Errorf("save progress: %w", gerr)
		default:
			s.progressRev = e.Revision()
		}
	}
	return errors.New("save progress: the progress key keeps changing (is another attempt of this step running?)")
}

// dropProgress removes the progress of a completed node when there is some: this attempt
// read or saved it, or, when this attempt never looked, an earlier attempt or delivery ran
// and the key is there. A node with no progress writes nothing (not even a delete marker);
// the happy path, a first attempt on a first delivery, does not even read.
func (s *stepRun) dropProgress(ctx context.Context, attempt int) {
	s.progressMu.Lock()
	used, held := s.progressUsed, s.progressRev != 0
	s.progressMu.Unlock()
	if held || !used && (attempt > 1 || s.meta.NumDelivered > 1) {
		_ = s.w.store.DropProgress(ctx, s.env.RunID, s.progressNode())
	}
}
