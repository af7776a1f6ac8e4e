package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestCrashPoints stops a worker dead (its connection closed, nothing more written or acked)
// at each gap between the writes of DESIGN.md, then lets a second worker take over: every
// run still completes, or lands in the DLQ exactly once.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	cases := []struct {
		point    string
		scenario string // permanent: a node fails permanently; retry: fails once with a long backoff; join: a diamond
		want     string
	}{
		{pointDLQPublished, "permanent", checkpoint.EndFailed},
		{pointDeadWritten, "permanent", checkpoint.EndFailed},
		{pointEndWritten, "permanent", checkpoint.EndFailed},
		{pointJoinComplete, "join", checkpoint.EndCompleted},
		{pointDoneWritten, "join", checkpoint.EndCompleted},
		{pointSinksComplete, "join", checkpoint.EndCompleted},
		{pointScheduled, "retry", checkpoint.EndCompleted},
	}
	for _, tc := range cases {
		t.Run(tc.point, func(t *testing.T) {
			t.Parallel()
			f := setup(t, "work")
			wf := workflow.New("crash")
			switch tc.scenario {
			case "join":
				wf.Node("a", "work")
				wf.Node("b", "work", "a")
				wf.Node("c", "work", "a")
				wf.Node("d", "work", "b", "c")
				wf.Node("e", "work", "b") // a second sink
			default:
				// A wait of 1.5 s is over AckWait/2, so the retry takes the schedule path.
				jitter := 0.0
				wf.Node("a", "work").WithRetry(workflow.Retry{Initial: workflow.Duration(1500 * time.Millisecond), Jitter: &jitter})
				wf.Node("b", "work", "a")
			}
			f.apply(wf)
			var runs counter
			handler := func(ctx context.Context, s *Step) (any, error) {
				n := runs.inc(s)
				switch {
				case tc.scenario == "permanent" && s.Node == "a":
					return nil, Permanent(errors.New("bad request"))
				case tc.scenario == "retry" && s.Node == "a" && s.Attempt == 1:
					return nil, fmt.Errorf("flake %d", n)
				}
				return s.Node, nil
			}
			var died atomic.Bool
			var nc1 *nats.Conn
			_, nc1, _ = f.worker(Config{hook: func(point string) bool {
				if point != tc.point || !died.CompareAndSwap(false, true) {
					return false
				}
				nc1.Close() // dead: no more writes, no ack
				return true
			}}, func(w *Worker) { w.Handle("work", handler) })
			id := f.start("crash", `{}`)
			natstest.Eventually(t, 20*time.Second, died.Load, "worker never reached %s", tc.point)
			f.worker(Config{}, func(w *Worker) { w.Handle("work", handler) })
			end := f.waitEnd(id, 30*time.Second)
			if end.Status != tc.want {
				t.Fatalf("run ended %s (%s), want %s", end.Status, end.Reason, tc.want)
			}
			natstest.Eventually(t, 20*time.Second, func() bool { return f.pending("work") == 0 }, "steps left in the stream")
			switch tc.want {
			case checkpoint.EndFailed:
				entries := f.dlq(1)
				if entries[0].RunID != id || entries[0].Node != "a" {
					t.Fatalf("DLQ entry %+v", entries[0])
				}
				if st := f.node(id, "a"); st.Status != checkpoint.StatusDead {
					t.Fatalf("node a is %s, want dead", st.Status)
				}
			default:
				for _, n := range wf.Nodes {
					if st := f.node(id, n.Name); st == nil || st.Status != checkpoint.StatusDone {
						t.Fatalf("node %s: %+v, want done", n.Name, st)
					}
				}
				if tc.scenario == "join" {
					if runs.get(id, "d") != 1 {
						t.Fatalf("join child d ran %d times, want 1", runs.get(id, "d"))
					}
				}
			}
		})
	}
}

// A worker that dies right after a handler returned on a step's first delivery leaves no
// trace in the node state; the redelivery counts the crash all the same (README, "Crash
// counting"), and runs the handler again.
func TestFirstDeliveryCrashIsCounted(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("first")
	wf.Node("a", "work")
	f.apply(wf)
	var runs counter
	handler := func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return "ok", nil }
	var died atomic.Bool
	var nc1 *nats.Conn
	_, nc1, _ = f.worker(Config{hook: func(point string) bool {
		if point != pointHandlerDone || !died.CompareAndSwap(false, true) {
			return false
		}
		nc1.Close()
		return true
	}}, func(w *Worker) { w.Handle("work", handler) })
	id := f.start("first", `{}`)
	natstest.Eventually(t, 20*time.Second, died.Load, "worker never reached %s", pointHandlerDone)
	if st := f.node(id, "a"); st != nil {
		t.Fatalf("the first delivery wrote %+v before it died; want no trace", st)
	}
	reruns := &countingObserver{}
	f.worker(Config{Observer: reruns}, func(w *Worker) { w.Handle("work", handler) })
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	st := f.node(id, "a")
	if st.Crashes != 1 || st.Attempts != 1 || runs.get(id, "a") != 2 || reruns.reruns.Load() != 1 {
		t.Fatalf("crashes %d, attempts %d, handler runs %d, reruns observed %d; want 1, 1, 2, 1",
			st.Crashes, st.Attempts, runs.get(id, "a"), reruns.reruns.Load())
	}
}

// Steps a worker hands back on purpose (deferred by a rate limit, again and again) mark
// their node state first: their redeliveries count no crash.
func TestHandBacksAreNotCrashes(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("limited")
	wf.Node("a", "work")
	wf.Nodes[0].Rate = &workflow.Rate{PerSecond: 2, Burst: 1} // waits over AckWait/3 are handed back
	f.apply(wf)
	var runs counter
	reruns := &countingObserver{}
	f.worker(Config{Observer: reruns}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return "ok", nil })
	})
	var ids []string
	for range 6 {
		ids = append(ids, f.start("limited", `{}`))
	}
	for _, id := range ids {
		if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
		}
		if st := f.node(id, "a"); st.Crashes != 0 || runs.get(id, "a") != 1 {
			t.Errorf("run %s: %d crashes, handler ran %d times; want 0 and 1", id, st.Crashes, runs.get(id, "a"))
		}
	}
	if n := reruns.reruns.Load(); n != 0 {
		t.Errorf("%d re-runs reported, want none", n)
	}
}

// countingObserver counts the re-runs a worker reports.
type countingObserver struct {
	nopObserver
	reruns atomic.Int64
}

func (o *countingObserver) StepRerun(workflow, node string) { o.reruns.Add(1) }

// TestNATSRestartMidRun shuts the server down while a run is under way and starts it again
// on the same store: the run completes.
func TestNATSRestartMidRun(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("restart")
	prev := []string{}
	for i := range 8 {
		name := fmt.Sprintf("n%d", i)
		wf.Node(name, "work", prev...)
		prev = []string{name}
	}
	f.apply(wf)
	reached, restarted := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			runs.inc(s)
			if s.Node == "n3" && once.CompareAndSwap(false, true) {
				close(reached)
				<-restarted // n3's result is recorded through the outage and the restart
			}
			return s.Node, nil
		})
	})
	id := f.start("restart", `{}`)
	<-reached
	f.srv.Stop()
	f.srv.Restart()
	close(restarted)
	end := f.waitEnd(id, 60*time.Second)
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	for i := range 8 {
		if st := f.node(id, fmt.Sprintf("n%d", i)); st == nil || st.Status != checkpoint.StatusDone {
			t.Fatalf("node n%d: %+v", i, st)
		}
	}
}

// A step that arrives while another dispatch of the same step is in flight in this worker
// is handed back marked: its next delivery counts no crash.
func TestHandBackBehindAnotherDispatchIsNoCrash(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("behind")
	wf.Node("a", "work")
	f.apply(wf)
	var runs counter
	w, _, _ := f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return "ok", nil })
	})
	const id = "behind-another-dispatch"
	key := workflow.IdempotencyKey(id, "a")
	// Another dispatch of the step holds it in this worker, as a stale original would.
	held, ok := w.claim(key, inflight{seq: 1 << 40, dispatch: "s9"})
	if !ok {
		t.Fatal("claim")
	}
	if _, err := f.prod.Start(context.Background(), "behind", []byte(`{}`), producer.StartOptions{ID: id}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		st := f.node(id, "a")
		return st != nil && st.Seq != 0
	}, "the step was not handed back marked")
	w.unclaim(held)
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if st := f.node(id, "a"); st.Crashes != 0 || runs.get(id, "a") != 1 {
		t.Fatalf("crashes %d, handler runs %d; want 0 and 1", st.Crashes, runs.get(id, "a"))
	}
}
