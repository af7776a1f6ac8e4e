package consumer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// A worker whose every slot is taken by a handler longer than the ack wait must not hold
// further steps unstarted past their ack wait: they would be delivered again elsewhere
// and run twice at once, and their first delivery taken for a crash.
func TestBusyWorkerHoldsNoStepPastItsAckWait(t *testing.T) {
	t.Parallel()
	f := setup(t, "long")
	wf := workflow.New("long")
	wf.Node("a", "long").WithTimeout(time.Minute)
	f.apply(wf)
	var (
		mu      sync.Mutex
		calls   = map[string]int{}
		overlap bool
		running = map[string]bool{}
	)
	f.worker(Config{Concurrency: 2}, func(w *Worker) {
		w.Handle("long", func(ctx context.Context, s *Step) (any, error) {
			mu.Lock()
			calls[s.RunID]++
			if running[s.RunID] {
				overlap = true
			}
			running[s.RunID] = true
			mu.Unlock()
			time.Sleep(testAckWait + testAckWait/2) // heartbeats keep this one alive
			mu.Lock()
			running[s.RunID] = false
			mu.Unlock()
			return "ok", nil
		})
	})
	var ids []string
	for range 4 {
		ids = append(ids, f.start("long", `{}`))
	}
	for _, id := range ids {
		if end := f.waitEnd(id, time.Minute); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if st := f.node(id, "a"); calls[id] != 1 || st.Crashes != 0 || overlap {
			t.Errorf("run %s: handler ran %d times (overlapping %v), %d crashes counted; want once, none", id, calls[id], overlap, st.Crashes)
		}
	}
}
