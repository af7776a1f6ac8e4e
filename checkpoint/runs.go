package checkpoint

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/workflow"
)

// RunFilter selects runs for ListRuns; zero fields match everything.
type RunFilter struct {
	// Status keeps runs in this status: running, completed, failed or cancelled.
	Status string
	// Workflow keeps runs of this workflow.
	Workflow string
	// Since keeps runs created at or after it.
	Since time.Time
	// Limit caps the number of runs returned, newest first (0: no cap).
	Limit int
	// Parent keeps the subflow runs that run started.
	Parent string
}

// RunSummary is one run as `jetflow runs ls` shows it.
type RunSummary struct {
	ID        string     `json:"id"`
	Workflow  string     `json:"workflow"`
	Status    string     `json:"status"`     // running, completed, failed or cancelled
	CreatedAt time.Time  `json:"created_at"` // when the run started
	EndedAt   *time.Time `json:"ended_at"`   // nil while running
	Reason    string     `json:"reason"`     // the end's reason
	// Parent is the run whose subflow node started this one; empty for a top-level run.
	Parent string `json:"parent,omitempty"`
}

// RunStatuses are the statuses a run can be in, as RunFilter.Status accepts them.
var RunStatuses = []string{RunRunning, EndCompleted, EndFailed, EndCancelled}

// ListRuns returns the runs matching f, newest first (by creation time, then by ID: UUIDv7
// IDs sort by time). It reads every run record and end in one pass over the bucket.
func (s *Store) ListRuns(ctx context.Context, f RunFilter) ([]*RunSummary, error) {
	if f.Status != "" && !slices.Contains(RunStatuses, f.Status) {
		return nil, fmt.Errorf("run status %q: use one of %s", workflow.OneLine(f.Status, 40), strings.Join(RunStatuses, ", "))
	}
	runs := map[string]*RunSummary{}
	ends := map[string]*End{}
	err := s.scan(ctx, []string{workflow.RunKey("*"), workflow.EndKey("*")}, func(e jetstream.KeyValueEntry) error {
		key := e.Key()
		switch {
		case strings.HasPrefix(key, workflow.RunKey("")):
			var r Run
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return nil // a damaged record is skipped, not fatal to the listing
			}
			id := strings.TrimPrefix(key, workflow.RunKey(""))
			runs[id] = &RunSummary{ID: id, Workflow: r.Workflow, Status: RunRunning, CreatedAt: r.Created}
			if r.Parent != nil {
				runs[id].Parent = r.Parent.Run
			}
		case strings.HasPrefix(key, workflow.EndKey("")):
			var end End
			if err := json.Unmarshal(e.Value(), &end); err != nil {
				return nil
			}
			ends[strings.TrimPrefix(key, workflow.EndKey(""))] = &end
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*RunSummary, 0, len(runs))
	for id, r := range runs {
		if end := ends[id]; end != nil {
			r.Status, r.Reason, r.EndedAt = end.Status, end.Reason, timePtr(end.At)
		}
		if (f.Status == "" || r.Status == f.Status) &&
			(f.Workflow == "" || r.Workflow == f.Workflow) &&
			(f.Since.IsZero() || !r.CreatedAt.Before(f.Since)) &&
			(f.Parent == "" || r.Parent == f.Parent) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *RunSummary) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// scan calls fn with the current value of every key matching one of filters (deleted keys
// are skipped) and returns once all were seen.
func (s *Store) scan(ctx context.Context, filters []string, fn func(jetstream.KeyValueEntry) error) error {
	return kvwatch.Scan(ctx, s.runs, filters, fn)
}

// RunEvent is one change of a run seen by WatchRun: a node's new state, or the run's end.
type RunEvent struct {
	// At is when the change was written (the broker's time of the KV write).
	At time.Time
	// Node names the node whose state changed; empty for the run's end.
	Node string
	// State is the node's new state; nil for the run's end.
	State *Node
	// End is the run's end; nil for a node change.
	End *End
}

// WatchRun calls fn with the current state of every node of the run that has one, then with
// each change, until the run ends (fn then gets the end) or ctx ends. It returns the end.
// ErrNotFound if there is no such run.
func (s *Store) WatchRun(ctx context.Context, id string, fn func(RunEvent)) (*End, error) {
	if !workflow.ValidRunID(id) {
		return nil, fmt.Errorf("%w: %q is not a run ID", ErrNotFound, workflow.OneLine(id, 80))
	}
	if _, err := s.Run(ctx, id); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.runs.WatchFiltered(ctx, []string{workflow.NodeKey(id, "*"), workflow.EndKey(id)}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch run %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	nodePrefix := workflow.NodeKey(id, "")
	var end *End
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch of run %s stopped", id)
			}
			if e == nil {
				// Every current value was delivered: an ended run is reported whole.
				initial = false
				if end != nil {
					return end, nil
				}
				continue
			}
			if e.Key() == workflow.EndKey(id) {
				var v End
				if err := json.Unmarshal(e.Value(), &v); err != nil {
					return nil, fmt.Errorf("read end of run %s: %w", id, err)
				}
				end = &v
				fn(RunEvent{At: e.Created(), End: end})
				if !initial {
					return end, nil
				}
				continue
			}
			var st Node
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				continue
			}
			fn(RunEvent{At: e.Created(), Node: strings.TrimPrefix(e.Key(), nodePrefix), State: &st})
		}
	}
}

// NodeStates reads the state of every node of a run that has one, by node name.
func (s *Store) NodeStates(ctx context.Context, run string) (map[string]*Node, error) {
	out := map[string]*Node{}
	prefix := workflow.NodeKey(run, "")
	err := s.scan(ctx, []string{workflow.NodeKey(run, "*")}, func(e jetstream.KeyValueEntry) error {
		var st Node
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return fmt.Errorf("read %s: stored value is not valid: %w", e.Key(), err)
		}
		out[strings.TrimPrefix(e.Key(), prefix)] = &st
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
