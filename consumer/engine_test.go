package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// counter counts handler runs per run.node.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(s *Step) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[s.IdempotencyKey]++
	return c.n[s.IdempotencyKey]
}

func (c *counter) get(run, node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[workflow.IdempotencyKey(run, node)]
}

func TestDiamond(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("diamond")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	wf.Node("c", "work", "a")
	wf.Node("d", "work", "b", "c")
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			runs.inc(s)
			var in struct {
				Input map[string]int             `json:"input"`
				Nodes map[string]json.RawMessage `json:"nodes"`
			}
			if err := s.Bind(&in); err != nil {
				return nil, err
			}
			return map[string]any{"node": s.Node, "parents": len(in.Nodes), "x": in.Input["x"]}, nil
		})
	})
	id := f.start("diamond", `{"x": 7}`)
	end := f.waitEnd(id, 20*time.Second)
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		st := f.node(id, n)
		if st == nil || st.Status != checkpoint.StatusDone || st.Attempts != 1 {
			t.Fatalf("node %s: %+v, want done after 1 attempt", n, st)
		}
		if got := runs.get(id, n); got != 1 {
			t.Errorf("node %s ran %d times, want 1", n, got)
		}
	}
	var out struct {
		Parents int `json:"parents"`
		X       int `json:"x"`
	}
	if err := json.Unmarshal(f.node(id, "d").Output, &out); err != nil || out.Parents != 2 || out.X != 7 {
		t.Fatalf("d's output %s: want 2 parents and the run input", f.node(id, "d").Output)
	}
}

func TestLinearChainOf20(t *testing.T) {
	t.Parallel()
	f := setup(t)
	wf := workflow.New("chain")
	prev := []string{}
	for i := range 20 {
		name := fmt.Sprintf("n%02d", i)
		wf.Node(name, "noop", prev...)
		prev = []string{name}
	}
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) { w.Handle("noop", func(context.Context, *Step) (any, error) { return nil, nil }) })
	id := f.start("chain", `{}`)
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	for i := range 20 {
		if st := f.node(id, fmt.Sprintf("n%02d", i)); st == nil || st.Status != checkpoint.StatusDone {
			t.Fatalf("node n%02d not done: %+v", i, st)
		}
	}
}

func TestFailTwiceThenSucceed(t *testing.T) {
	t.Parallel()
	f := setup(t, "flaky")
	wf := workflow.New("flaky")
	wf.Node("x", "flaky").WithRetry(workflow.Retry{Initial: workflow.Duration(10 * time.Millisecond), Max: workflow.Duration(50 * time.Millisecond)})
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("flaky", func(ctx context.Context, s *Step) (any, error) {
			if n := runs.inc(s); n <= 2 {
				return nil, fmt.Errorf("flake %d", n)
			}
			return "ok", nil
		})
	})
	id := f.start("flaky", `null`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	st := f.node(id, "x")
	if st.Attempts != 3 || runs.get(id, "x") != 3 {
		t.Fatalf("attempts recorded %d, handler runs %d; want 3 and 3", st.Attempts, runs.get(id, "x"))
	}
}

func TestPermanentFailureGoesToDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t, "bad")
	wf := workflow.New("perm")
	wf.Node("a", "bad")
	wf.Node("b", "bad", "a")
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("bad", func(ctx context.Context, s *Step) (any, error) {
			runs.inc(s)
			return nil, Permanent(errors.New("401 unauthorized"))
		})
	})
	id := f.start("perm", `{}`)
	end := f.waitEnd(id, 20*time.Second)
	if end.Status != checkpoint.EndFailed {
		t.Fatalf("run ended %s, want failed", end.Status)
	}
	st := f.node(id, "a")
	if st.Status != checkpoint.StatusDead || st.Reason != "permanent error" || st.LastError != "401 unauthorized" || st.DLQSeq == 0 {
		t.Fatalf("node a: %+v", st)
	}
	if runs.get(id, "a") != 1 || runs.get(id, "b") != 0 {
		t.Fatalf("handler runs a=%d b=%d, want 1 and 0", runs.get(id, "a"), runs.get(id, "b"))
	}
	entries := f.dlq(1)
	e := entries[0]
	if e.RunID != id || e.Node != "a" || e.Workflow != "perm" || e.Reason != "permanent error" || e.Attempts != 1 || e.Error != "401 unauthorized" {
		t.Fatalf("DLQ entry %+v", e)
	}
}

func TestAttemptsExhaustedGoToDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t, "bad")
	wf := workflow.New("exhaust")
	wf.Node("a", "bad").WithRetry(workflow.Retry{MaxAttempts: 3, Initial: workflow.Duration(time.Millisecond), Max: workflow.Duration(5 * time.Millisecond)})
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("bad", func(ctx context.Context, s *Step) (any, error) {
			return nil, fmt.Errorf("boom %d", runs.inc(s))
		})
	})
	id := f.start("exhaust", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndFailed {
		t.Fatalf("run ended %s, want failed", end.Status)
	}
	if runs.get(id, "a") != 3 {
		t.Fatalf("handler ran %d times, want 3", runs.get(id, "a"))
	}
	e := f.dlq(1)[0]
	if e.Attempts != 3 || e.Reason != "attempts exhausted (3 of 3)" || e.Error != "boom 3" {
		t.Fatalf("DLQ entry %+v", e)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	f := setup(t, "slow")
	wf := workflow.New("slow")
	wf.Node("a", "slow").WithTimeout(100 * time.Millisecond).WithRetry(workflow.Retry{Initial: workflow.Duration(time.Millisecond), Max: workflow.Duration(time.Millisecond)})
	f.apply(wf)
	var runs counter
	var sawDeadline atomic.Bool
	f.worker(Config{}, func(w *Worker) {
		w.Handle("slow", func(ctx context.Context, s *Step) (any, error) {
			if runs.inc(s) == 1 {
				<-ctx.Done() // the first attempt outlives its timeout
				sawDeadline.Store(errors.Is(ctx.Err(), context.DeadlineExceeded))
				return nil, ctx.Err()
			}
			return "fast", nil
		})
	})
	id := f.start("slow", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if st := f.node(id, "a"); st.Attempts != 2 || !sawDeadline.Load() {
		t.Fatalf("attempts %d (want 2), deadline seen %v", st.Attempts, sawDeadline.Load())
	}
}

// A handler that ignores its timeout is abandoned after the grace: its worker (one slot
// here) lets go of the step and runs others, the step comes back after its ack wait and
// completes, and the late return of the abandoned handler writes nothing.
func TestHandlerIgnoringItsTimeoutIsAbandoned(t *testing.T) {
	t.Parallel()
	f := setup(t, "stubborn")
	wf := workflow.New("stubborn")
	wf.Node("a", "stubborn").WithTimeout(100 * time.Millisecond)
	f.apply(wf)
	var runs counter
	release, first := make(chan struct{}), make(chan string, 1)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	f.worker(Config{Concurrency: 1, grace: 200 * time.Millisecond}, func(w *Worker) {
		w.Handle("stubborn", func(ctx context.Context, s *Step) (any, error) {
			if runs.inc(s) == 1 && len(first) == 0 {
				first <- s.RunID
				<-release // ignores ctx
				return "late", nil
			}
			return "on time", nil
		})
	})
	stuck := f.start("stubborn", `{}`)
	if got := <-first; got != stuck {
		t.Fatalf("first handler ran for %s, want %s", got, stuck)
	}
	// The only slot is taken by the stuck handler until it is abandoned.
	other := f.start("stubborn", `{}`)
	for _, id := range []string{other, stuck} {
		if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
	}
	close(release) // the abandoned handler returns at last
	time.Sleep(300 * time.Millisecond)
	st := f.node(stuck, "a")
	if string(st.Output) != `"on time"` || st.Attempts != 1 {
		t.Fatalf("stuck run: output %s after %d attempts; want the redelivery's result", st.Output, st.Attempts)
	}
	if n := runs.get(stuck, "a"); n != 2 {
		t.Fatalf("handler ran %d times for the stuck run, want 2", n)
	}
}

func TestPanicIsRetriedWithItsText(t *testing.T) {
	t.Parallel()
	f := setup(t, "shaky")
	wf := workflow.New("panics")
	wf.Node("a", "shaky").WithRetry(workflow.Retry{MaxAttempts: 2, Initial: workflow.Duration(time.Millisecond), Max: workflow.Duration(time.Millisecond)})
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("shaky", func(ctx context.Context, s *Step) (any, error) {
			panic(fmt.Sprintf("nil map in attempt %d", s.Attempt))
		})
	})
	id := f.start("panics", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndFailed {
		t.Fatalf("run ended %s", end.Status)
	}
	st := f.node(id, "a")
	if st.Attempts != 2 || st.LastError != "handler panicked: nil map in attempt 2" {
		t.Fatalf("node a: attempts %d, last error %q", st.Attempts, st.LastError)
	}
}

// TestLongSleepParksInASchedule checks that a wait over AckWait/2 holds no ack-pending slot:
// the step is parked in a message schedule (dispatch s1) and woken by the server.
func TestLongSleepParksInASchedule(t *testing.T) {
	t.Parallel()
	f := setup(t)
	wf := workflow.New("nap")
	wf.Node("wait", "sleep").WithArgs(map[string]any{"duration": "1500ms"}) // testAckWait/2 is 1 s
	wf.Node("after", "noop", "wait")
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("sleep", func(ctx context.Context, s *Step) (any, error) {
			if s.NotBefore.IsZero() {
				return nil, Park(time.Now().Add(1500 * time.Millisecond))
			}
			if time.Now().Before(s.NotBefore) {
				return nil, Park(s.NotBefore)
			}
			return "slept", nil
		})
		w.Handle("noop", func(context.Context, *Step) (any, error) { return nil, nil })
	})
	id := f.start("nap", `{}`)
	var parked *checkpoint.Node
	natstest.Eventually(t, 10*time.Second, func() bool {
		parked = f.node(id, "wait")
		return parked != nil && parked.Status == checkpoint.StatusRetrying
	}, "the sleep never parked")
	if parked.Dispatch != "s1" || parked.Attempts != 0 || parked.NotBefore.IsZero() {
		t.Fatalf("parked state %+v: want dispatch s1, no attempt spent, a not_before", parked)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.pending("sleep") == 0 }, "the parked step still holds a slot")
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s", end.Status)
	}
	if st := f.node(id, "wait"); st.Attempts != 1 || string(st.Output) != `"slept"` {
		t.Fatalf("after waking: %+v", st)
	}
}
