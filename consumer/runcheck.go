package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/workflow"
)

// A step whose run has no run.<id> record runs no handler: it goes to the DLQ as an unknown
// run (DESIGN.md, "Starting runs, and who may publish what"), and nothing is written under
// the run's keys. Start writes the record before it publishes a root, so every step of a
// real run finds it. The check costs a read of run.<id> the first time a worker sees a run;
// after that the worker remembers the run (knownRuns), and a node that already has a state
// was checked when that state was first written.

// knownRunsSize is how many run IDs one generation of knownRuns holds.
const knownRunsSize = 1 << 16

// knownRuns remembers run IDs whose record a worker has read: two generations of a map,
// the older dropped when the newer fills, so it holds between one and two generations'
// worth of the most recently seen runs.
type knownRuns struct {
	mu       sync.RWMutex
	cur, old map[string]struct{}
}

func (k *knownRuns) has(id string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if _, ok := k.cur[id]; ok {
		return true
	}
	_, ok := k.old[id]
	return ok
}

func (k *knownRuns) add(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil || len(k.cur) >= knownRunsSize {
		k.old, k.cur = k.cur, make(map[string]struct{}, 1024)
	}
	k.cur[id] = struct{}{}
}

// errUnknownRun ends a delivery whose run has no record: the step went to the DLQ.
var errUnknownRun = errors.New("unknown run")

// checkRun makes sure the step's run was started, for a node with no state yet. A run with
// no record sends the step to the DLQ (unknown run), writing nothing else, and returns
// errUnknownRun; a broker error is returned as it is.
func (s *stepRun) checkRun(ctx context.Context) error {
	if s.cur.st != nil || s.w.known.has(s.env.RunID) {
		return nil
	}
	_, err := s.w.store.Run(s.ops(ctx), s.env.RunID)
	if err == nil {
		s.w.known.add(s.env.RunID)
		return nil
	}
	if !errors.Is(err, checkpoint.ErrNotFound) {
		return err
	}
	reason := fmt.Sprintf("unknown run: run %s has no record (%s); steps are published by a start, never alone",
		s.env.RunID, workflow.RunKey(s.env.RunID))
	f := dlq.Failure{Reason: reason, Error: reason, Worker: s.w.cfg.ID, StreamSeq: s.meta.Sequence.Stream,
		Subject: s.msg.Subject(), Workflow: s.env.Workflow, Node: s.env.Node, RunID: s.env.RunID}
	if _, err := dlq.Publish(s.ops(ctx), s.w.js, s.w.cfg.Names, s.msg.Data(), f); err != nil {
		return err
	}
	s.logger().Warn("step of an unknown run moved to the DLQ", "reason", reason)
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeadLettered, 0)
	_ = s.msg.Term()
	return errUnknownRun
}
