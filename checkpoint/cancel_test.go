package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
)

// TestCancelRacesTheRunsEnd: a run that fails while it is being cancelled ends one way only.
// Either the cancel wins (end cancelled, cancel.<run> written) or the failure does (an
// EndedError, and no cancel.<run> left on the failed run, which would refuse its DLQ replays
// and make workers skip its live branches).
func TestCancelRacesTheRunsEnd(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	wins := map[string]int{}
	for i := range 20 {
		run := fmt.Sprintf("race-%d", i)
		f.run(run, "a", now, "", time.Time{})
		var (
			wg        sync.WaitGroup
			cancelled bool
			cerr      error
		)
		wg.Go(func() { cancelled, cerr = f.store.Cancel(ctx, run, "") })
		wg.Go(func() {
			// Spread the failure over the cancel's few round trips, so both orders happen.
			time.Sleep(time.Duration(i%10) * 100 * time.Microsecond)
			if _, err := f.store.CreateEnd(ctx, run, &checkpoint.End{Status: checkpoint.EndFailed, Reason: "node x: boom", At: now}); err != nil {
				t.Errorf("end %s: %v", run, err)
			}
		})
		wg.Wait()
		end, _, err := f.store.End(ctx, run)
		if err != nil || end == nil {
			t.Fatalf("%s: end %+v, %v", run, end, err)
		}
		key, err := f.store.Cancelled(ctx, run)
		if err != nil {
			t.Fatal(err)
		}
		var ended *checkpoint.EndedError
		switch {
		case cerr == nil && cancelled && end.Status == checkpoint.EndCancelled && key:
			wins["cancel"]++
		case errors.As(cerr, &ended) && ended.End.Status == checkpoint.EndFailed && end.Status == checkpoint.EndFailed && !key:
			wins["failure"]++
		default:
			t.Errorf("%s: Cancel returned %v, %v; end %s; cancel.<run> there: %v", run, cancelled, cerr, end.Status, key)
		}
	}
	t.Logf("outcomes: %v", wins)
}

// TestCancelKilledBetweenWrites stops a cancel dead between its two writes (cancel.<run>,
// then the end): the key is there, the run not yet ended; the next Cancel ends it, with the
// first cancel's reason.
func TestCancelKilledBetweenWrites(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.run("half", "a", time.Now().UTC(), "", time.Time{})
	stop := func(point string) bool { return point == checkpoint.PointCancelKeyed }
	if _, err := f.store.CancelWithHook(ctx, "half", "stop it", stop); !errors.Is(err, checkpoint.ErrStopped) {
		t.Fatalf("cancel stopped dead: %v", err)
	}
	if c, _ := f.store.Cancelled(ctx, "half"); !c {
		t.Fatal("cancel.<run> not written before the crash point")
	}
	if end, _, _ := f.store.End(ctx, "half"); end != nil {
		t.Fatalf("the run ended before the crash point: %+v", end)
	}
	if ok, err := f.store.Cancel(ctx, "half", "again"); err != nil || !ok {
		t.Fatalf("Cancel after the crash: %v, %v; want it to end the run", ok, err)
	}
	if end, _, _ := f.store.End(ctx, "half"); end == nil || end.Status != checkpoint.EndCancelled || end.Reason != "stop it" {
		t.Errorf("want the run ended cancelled with the first cancel's reason: %+v", end)
	}
	if ok, err := f.store.Cancel(ctx, "half", "once more"); err != nil || ok {
		t.Errorf("a third Cancel: %v, %v; want a no-op", ok, err)
	}
}

// A cancel stopped after its key, on a run that then failed: the next Cancel is refused (the
// run ended failed) and takes the left-over key back, so the run's DLQ entries stay
// replayable.
func TestCancelKilledThenRunFailed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.run("left", "a", time.Now().UTC(), "", time.Time{})
	stop := func(point string) bool { return point == checkpoint.PointCancelKeyed }
	if _, err := f.store.CancelWithHook(ctx, "left", "stop it", stop); !errors.Is(err, checkpoint.ErrStopped) {
		t.Fatalf("cancel stopped dead: %v", err)
	}
	if _, err := f.store.CreateEnd(ctx, "left", &checkpoint.End{Status: checkpoint.EndFailed, Reason: "node a: boom", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	var ended *checkpoint.EndedError
	if _, err := f.store.Cancel(ctx, "left", "again"); !errors.As(err, &ended) {
		t.Fatalf("Cancel of a failed run: %v, want an EndedError", err)
	}
	if c, err := f.store.Cancelled(ctx, "left"); err != nil || c {
		t.Fatalf("cancel.<run> left on the failed run: %v, %v", c, err)
	}
}
