package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestHealthActions: the health monitor's actions on a worker — a lower concurrency for a
// degraded type, a pause for an unhealthy one — hold, and lifting them lets the steps run.
func TestHealthActions(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("acted")
	wf.Node("a", "work")
	f.apply(wf)
	var running, peak, calls atomic.Int32
	w, _, _ := f.worker(Config{Concurrency: 4}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(20 * time.Millisecond)
			running.Add(-1)
			calls.Add(1)
			return nil, nil
		})
	})
	natstest.Eventually(t, 10*time.Second, func() bool { return w.typeState("work") != nil }, "worker did not start")

	w.PauseType("work", time.Now().Add(time.Hour))
	var ids []string
	for range 8 {
		ids = append(ids, f.start("acted", `{}`))
	}
	// Paused: the steps wait in the stream (prefetched ones are handed back), none runs.
	natstest.Eventually(t, 10*time.Second, func() bool {
		c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer("work"))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil || info.Delivered.Stream == 0 && info.NumPending != 8 {
			return false // not yet offered to the worker
		}
		s, err := f.js.Stream(context.Background(), f.names.StepsStream())
		if err != nil {
			return false
		}
		si, err := s.Info(context.Background())
		return err == nil && si.State.Msgs == 8
	}, "the runs' steps are not in the stream")
	if calls.Load() != 0 {
		t.Fatalf("%d steps ran while the type was paused", calls.Load())
	}
	w.SetTypeConcurrency("work", 1)
	w.ResumeType("work")
	for _, id := range ids {
		if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s", id, end.Status)
		}
	}
	if peak.Load() != 1 {
		t.Fatalf("%d steps ran at once under a concurrency of 1", peak.Load())
	}
}
