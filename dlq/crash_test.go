package dlq_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestReplayKilledAtEachGap stops a replay dead at each gap between its writes (DESIGN.md:
// "keep the orders, and test a kill at each gap") and then runs the same replay again, as an
// operator would after the crash: the node runs exactly once more, the run completes, and the
// entry is gone.
func TestReplayKilledAtEachGap(t *testing.T) {
	t.Parallel()
	for _, point := range []string{dlq.PointReplayRetrying, dlq.PointReplayReopened, dlq.PointReplayPublished} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			p := setupPay(t)
			ctx := context.Background()
			run, e := p.failedRun()
			p.fixed.Store(true)

			stop := func(at string) bool { return at == point }
			if _, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.WithHook(dlq.ReplayOptions{}, stop)); !errors.Is(err, dlq.ErrStopped) {
				t.Fatalf("replay stopped at %s: got %v", point, err)
			}
			// What the crash left: the node is no longer dead, the entry is still there.
			if st := p.node(run, "charge"); st.Status == checkpoint.StatusDead || st.Dispatch != workflow.DispatchReplay(e.ID) || st.Replays != 1 {
				t.Fatalf("charge after the crash: %+v", st)
			}
			if _, err := dlq.Get(ctx, p.js, p.names, e.ID); err != nil {
				t.Fatalf("the entry should still be there after a crash at %s: %v", point, err)
			}

			res, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{})
			if err != nil {
				t.Fatalf("replay after a crash at %s: %v", point, err)
			}
			if res.Status != dlq.StatusAlreadyReplayed {
				t.Errorf("replay after a crash: status %q, want %q", res.Status, dlq.StatusAlreadyReplayed)
			}
			p.waitEnd(run, checkpoint.EndCompleted)
			natstest.Eventually(t, 10*time.Second, func() bool { return pending(t, p.fixture, "pay") == 0 }, "steps left in the stream")
			if n := p.calls.get(run, "charge"); n != 2 {
				t.Errorf("charge ran %d times, want 2 (the failure and one replay)", n)
			}
			if st := p.node(run, "charge"); st.Status != checkpoint.StatusDone || st.Replays != 1 {
				t.Errorf("charge: %+v, want done after one replay", st)
			}
			if _, err := dlq.Get(ctx, p.js, p.names, e.ID); !errors.Is(err, dlq.ErrNoEntry) {
				t.Errorf("the entry should be gone: %v", err)
			}
			if got, err := dlq.List(ctx, p.js, p.names, dlq.Filter{}); err != nil || len(got) != 0 {
				t.Errorf("DLQ: %d entries (%v), want none", len(got), err)
			}
		})
	}
}

// TestReplayKilledThenNodeDiedAgain: a replay stopped after its publish, whose step then fails
// again (a second entry), is finished by running it again: the old entry is deleted, the new
// one is left and replays normally.
func TestReplayKilledThenNodeDiedAgain(t *testing.T) {
	t.Parallel()
	p := setupPay(t)
	ctx := context.Background()
	run, first := p.failedRun()

	stop := func(at string) bool { return at == dlq.PointReplayPublished }
	if _, err := dlq.Replay(ctx, p.js, p.store, p.names, first.ID, dlq.WithHook(dlq.ReplayOptions{}, stop)); !errors.Is(err, dlq.ErrStopped) {
		t.Fatalf("replay: %v", err)
	}
	// Still not fixed: the replayed step fails again, into a second entry.
	natstest.Eventually(t, 20*time.Second, func() bool {
		st, _, err := p.store.Node(ctx, run, "charge")
		return err == nil && st != nil && st.Status == checkpoint.StatusDead && st.DLQSeq > first.ID
	}, "the replayed step did not die again")
	p.waitEnd(run, checkpoint.EndFailed)

	res, err := dlq.Replay(ctx, p.js, p.store, p.names, first.ID, dlq.ReplayOptions{})
	if err != nil || res.Status != dlq.StatusAlreadyReplayed {
		t.Fatalf("replay of the first entry again: %+v, %v", res, err)
	}
	entries := p.entries(1)
	if entries[0].ID == first.ID {
		t.Fatalf("the first entry is still there: %+v", entries[0])
	}
	if n := p.calls.get(run, "charge"); n != 2 {
		t.Errorf("charge ran %d times, want 2", n)
	}
	// The second entry replays normally once the cause is fixed.
	p.fixed.Store(true)
	if res, err := dlq.Replay(ctx, p.js, p.store, p.names, entries[0].ID, dlq.ReplayOptions{}); err != nil || res.Status != dlq.StatusReplayed {
		t.Fatalf("replay of the second entry: %+v, %v", res, err)
	}
	p.waitEnd(run, checkpoint.EndCompleted)
	if n := p.calls.get(run, "charge"); n != 3 {
		t.Errorf("charge ran %d times, want 3", n)
	}
}

// TestReplayKilledThenStepMovedOn: a replay stopped after its publish, whose step then failed
// once more and waits in a message schedule (dispatch s<n>, no longer the replay's), is
// finished by running it again: the node records which entry it was replayed from, so the
// rerun deletes the entry instead of refusing it as "not dead".
func TestReplayKilledThenStepMovedOn(t *testing.T) {
	t.Parallel()
	f := setup(t, "slowpay")
	wf := workflow.New("slow")
	// A 2 s backoff is over half the fixture's 2 s ack wait: the retry takes the schedule path.
	wf.Node("charge", "slowpay").WithRetry(workflow.Retry{MaxAttempts: 3, Initial: workflow.Duration(2 * time.Second), Jitter: new(float64)})
	f.apply(wf)
	var fixed atomic.Bool
	var c calls
	f.worker(func(w *consumer.Worker) {
		w.Handle("slowpay", func(ctx context.Context, s *consumer.Step) (any, error) {
			c.add(s)
			switch {
			case !fixed.Load():
				return nil, consumer.Permanent(errors.New("card declined"))
			case s.Attempt == 1:
				return nil, errors.New("gateway timeout") // retried after 2 s
			}
			return "charged", nil
		})
	})
	ctx := context.Background()
	run := f.start("slow", `{}`)
	f.waitEnd(run, checkpoint.EndFailed)
	e := f.entries(1)[0]
	fixed.Store(true)

	stop := func(at string) bool { return at == dlq.PointReplayPublished }
	if _, err := dlq.Replay(ctx, f.js, f.store, f.names, e.ID, dlq.WithHook(dlq.ReplayOptions{}, stop)); !errors.Is(err, dlq.ErrStopped) {
		t.Fatalf("replay: %v", err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		st := f.node(run, "charge")
		return st != nil && strings.HasPrefix(st.Dispatch, "s")
	}, "the replayed step did not move to a scheduled retry")

	res, err := dlq.Replay(ctx, f.js, f.store, f.names, e.ID, dlq.ReplayOptions{})
	if err != nil || res.Status != dlq.StatusAlreadyReplayed {
		t.Fatalf("replay of the entry again: %+v, %v", res, err)
	}
	if entries, err := dlq.List(ctx, f.js, f.names, dlq.Filter{}); err != nil || len(entries) != 0 {
		t.Fatalf("DLQ after the rerun: %d entries (%v), want 0", len(entries), err)
	}
	f.waitEnd(run, checkpoint.EndCompleted)
	if n := c.get(run, "charge"); n != 3 {
		t.Errorf("charge ran %d times, want 3 (declined, gateway timeout, charged)", n)
	}
}
