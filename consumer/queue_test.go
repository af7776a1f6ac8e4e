package consumer

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// queued is how many delivered steps wait for a slot.
func (s *slots) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// TestQueuedStepsKeptAlive: short steps make two workers (concurrency 2) prefetch; then the
// steps turn long (5 s, more than twice the ack wait) at once, and a third worker with free
// slots joins. Each queued step is kept alive while it waits: the server never hands it to
// the third worker, no handler runs twice or beside itself, no crash is counted and every
// run completes.
func TestQueuedStepsKeptAlive(t *testing.T) {
	t.Parallel()
	f := setup(t, "turns")
	wf := workflow.New("turns")
	wf.Node("a", "turns")
	f.apply(wf)
	var slow atomic.Bool
	live := newLiveCounter()
	handler := func(ctx context.Context, s *Step) (any, error) {
		defer live.begin(s.IdempotencyKey)()
		if !slow.Load() {
			return "fast", nil
		}
		return sleepStep(ctx, s, 5*time.Second)
	}
	var workers []*Worker
	for range 2 {
		w, _, _ := f.worker(Config{Concurrency: 2}, func(w *Worker) { w.Handle("turns", handler) })
		workers = append(workers, w)
	}
	var ids []string
	for i := range 40 {
		ids = append(ids, f.start("turns", fmt.Sprintf(`{"fast":%d}`, i)))
	}
	checkEnds(t, ids, f.waitEnds(ids, time.Minute), time.Minute)
	if t.Failed() {
		return
	}

	// 8 long steps: 2 running and 2 queued on each worker, when both prefetch.
	slow.Store(true)
	var most atomic.Int32
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := 0
			for _, w := range workers {
				if ts := w.typeState("turns"); ts != nil {
					n += ts.slots.queued()
				}
			}
			most.Store(max(most.Load(), int32(n)))
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	var long []string
	for i := range 8 {
		long = append(long, f.start("turns", fmt.Sprintf(`{"slow":%d}`, i)))
	}
	// Once the long steps are delivered (and some queued), a worker with free slots joins:
	// a queued step whose ack wait ran out would be delivered to it.
	time.Sleep(500 * time.Millisecond)
	f.worker(Config{Concurrency: 4}, func(w *Worker) { w.Handle("turns", handler) })
	const within = 90 * time.Second
	ends := f.waitEnds(long, within)
	close(stop)
	<-sampled
	checkEnds(t, long, ends, within)
	if most.Load() == 0 {
		t.Fatal("no step was ever queued: the workers did not prefetch, so this test shows nothing")
	}
	t.Logf("at most %d steps queued at once", most.Load())
	var twice []string
	for _, id := range append(ids, long...) {
		key := workflow.IdempotencyKey(id, "a")
		if maxLive, runs := live.get(key); runs != 1 || maxLive > 1 {
			twice = append(twice, fmt.Sprintf("%s (%d runs, %d at once)", key, runs, maxLive))
		}
		if st := f.node(id, "a"); st == nil || st.Crashes != 0 {
			t.Errorf("node %s: state %+v, want done with 0 crashes", key, st)
		}
	}
	if len(twice) > 0 {
		t.Errorf("%d handlers did not run exactly once: %s", len(twice), strings.Join(twice, ", "))
	}
	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Errorf("the DLQ holds %d entries, want none", len(entries))
	}
}
