package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// fullRun records a run with every kind of key, ended with status at ended ("" : running).
func (f *fixture) fullRun(id, status string, ended time.Time) {
	f.t.Helper()
	ctx := context.Background()
	f.run(id, "wf", ended.Add(-time.Minute), "", time.Time{})
	kv := f.store.KV()
	for _, k := range []string{workflow.NodeKey(id, "a"), workflow.NodeKey(id, "b"), workflow.JoinKey(id, "b"),
		workflow.SinksKey(id), workflow.ProgressKey(id, "a")} {
		if _, err := kv.Create(ctx, k, []byte(`{}`)); err != nil {
			f.t.Fatal(err)
		}
	}
	switch status {
	case "":
	case checkpoint.EndCancelled:
		if _, err := f.store.Cancel(ctx, id, ""); err != nil {
			f.t.Fatal(err)
		}
		// Cancel ends the run now; move its end back to ended.
		e, rev, err := f.store.End(ctx, id)
		if err != nil {
			f.t.Fatal(err)
		}
		e.At = ended
		if err := f.store.DeleteEnd(ctx, id, rev); err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.store.CreateEnd(ctx, id, e); err != nil {
			f.t.Fatal(err)
		}
	default:
		if _, err := f.store.CreateEnd(ctx, id, &checkpoint.End{Status: status, At: ended}); err != nil {
			f.t.Fatal(err)
		}
	}
}

// keysOf lists the keys of the runs bucket that belong to run.
func (f *fixture) keysOf(run string) []string {
	f.t.Helper()
	l, err := f.store.KV().ListKeys(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		if strings.Contains(k+".", "."+run+".") {
			out = append(out, k)
		}
	}
	return out
}

func TestReaper(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	base := time.Now().UTC()
	old := base.Add(-8 * 24 * time.Hour)
	f.fullRun("reap-old", checkpoint.EndCancelled, old)
	f.fullRun("reap-dlq", checkpoint.EndFailed, old)
	f.fullRun("reap-young", checkpoint.EndCompleted, base.Add(-24*time.Hour))
	f.fullRun("reap-live", "", base.Add(-30*24*time.Hour))
	dlqID, err := dlq.Publish(ctx, f.js, f.names, []byte(`{}`), dlq.Failure{Workflow: "wf", Node: "a", RunID: "reap-dlq", Reason: "permanent error", StreamSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A schedule the cancelled run left parked in the steps stream.
	sched := f.names.SchedSubject("reap-old", "a", 1)
	if _, err := f.js.Publish(ctx, sched, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.keysOf("reap-old")); n != 8 {
		t.Fatalf("reap-old has %d keys, want 8", n)
	}

	clock := func() time.Time { return base }
	r := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: clock, Owner: "a"})
	n, err := r.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Sweep: %d, %v; want 1 run purged", n, err)
	}
	if keys := f.keysOf("reap-old"); len(keys) != 0 {
		t.Errorf("reap-old keys left: %v", keys)
	}
	steps, err := f.js.Stream(ctx, f.names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := steps.GetLastMsgForSubject(ctx, sched); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("the cancelled run's schedule should be purged: %v", err)
	}
	for run, want := range map[string]int{"reap-dlq": 7, "reap-young": 7, "reap-live": 6} {
		if keys := f.keysOf(run); len(keys) != want {
			t.Errorf("%s: %d keys %v, want %d (it must be kept)", run, len(keys), keys, want)
		}
	}

	// One reaper at a time: another owner finds the lease held.
	other := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: clock, Owner: "b"})
	if _, err := other.Sweep(ctx); !errors.Is(err, checkpoint.ErrLeaseHeld) {
		t.Errorf("a second reaper: want ErrLeaseHeld, got %v", err)
	}
	// The holder sweeps again; once the DLQ entry is gone, the failed run goes too.
	if n, err := r.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("second sweep: %d, %v; want nothing to do", n, err)
	}
	if _, err := dlq.Delete(ctx, f.js, f.names, dlqID); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Sweep(ctx); err != nil || n != 1 || len(f.keysOf("reap-dlq")) != 0 {
		t.Errorf("sweep after the DLQ entry went: %d, %v, keys %v", n, err, f.keysOf("reap-dlq"))
	}
	// The lease expires: the other reaper takes it over, and purges runs as they age.
	later := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: func() time.Time { return base.Add(2 * time.Hour) }, Owner: "b"})
	if n, err := later.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("sweep two hours later: %d, %v; want the lease and nothing to purge", n, err)
	}
	week := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: func() time.Time { return base.Add(7 * 24 * time.Hour) }, Owner: "b"})
	if n, err := week.Sweep(ctx); err != nil || n != 1 || len(f.keysOf("reap-young")) != 0 {
		t.Errorf("sweep a week later: %d, %v, reap-young keys %v", n, err, f.keysOf("reap-young"))
	}
	if keys := f.keysOf("reap-live"); len(keys) != 6 {
		t.Errorf("a run that has not ended is never purged: keys %v", keys)
	}
}

func TestReaperRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	base := time.Now().UTC()
	f.fullRun("reap-me", checkpoint.EndCompleted, base.Add(-time.Hour))
	r := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Retention: time.Minute, Interval: 50 * time.Millisecond, Owner: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	natstest.Eventually(t, 10*time.Second, func() bool { return len(f.keysOf("reap-me")) == 0 }, "Run did not purge the run")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run gave the lease up: another reaper sweeps at once.
	other := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Owner: "b"})
	if _, err := other.Sweep(context.Background()); err != nil {
		t.Errorf("sweep after Run stopped: %v", err)
	}
	bad := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Retention: -time.Hour})
	if err := bad.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Retention") {
		t.Errorf("a negative retention: %v", err)
	}
}

// TestReapedRunsLeaveNoMarkers: purging a finished run leaves markers that expire, so after
// the reaper purged N runs the runs stream holds O(1) messages, not one marker per key of
// every run ever reaped. Keys that were deleted rather than holding a value (a dropped
// progress key, an end a replay deleted) are purged too.
func TestReapedRunsLeaveNoMarkers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	s, err := f.js.Stream(ctx, "KV_"+f.names.RunsBucket())
	if err != nil {
		t.Fatal(err)
	}
	// A short marker TTL, so the test need not wait the hour setup gives.
	sc := s.CachedInfo().Config
	sc.AllowMsgTTL, sc.SubjectDeleteMarkerTTL = true, time.Second
	if _, err := f.js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	const runs = 20
	old := time.Now().UTC().Add(-8 * 24 * time.Hour)
	for i := range runs {
		id := fmt.Sprintf("marked-%d", i)
		f.fullRun(id, checkpoint.EndCompleted, old)
		// A progress key a retried node dropped: only its delete marker is left.
		k := workflow.ProgressKey(id, "b")
		if _, err := f.store.KV().Create(ctx, k, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := f.store.KV().Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	msgs := func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	if n := msgs(); n < 8*runs {
		t.Fatalf("%d messages before the sweep, want at least %d", n, 8*runs)
	}
	r := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Owner: "a"})
	if n, err := r.Sweep(ctx); err != nil || n != runs {
		t.Fatalf("Sweep: %d, %v; want %d runs purged", n, err, runs)
	}
	// What is left is the reaper's lease: one message.
	deadline := time.Now().Add(20 * time.Second)
	for n := msgs(); n > 1; n = msgs() {
		if time.Now().After(deadline) {
			t.Fatalf("the runs stream still holds %d messages 20 s after %d runs were reaped; want 1 (the lease)", n, runs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReaperRepairsCutShortStarts: Repair publishes the roots of a run record past the
// grace whose roots the steps stream never stored, once (the msg-id dedups every later
// try); it leaves a young record to its producer, and ends failed a run whose definition
// is gone.
func TestReaperRepairsCutShortStarts(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	wf := workflow.New("two-roots")
	wf.Node("a", "noop")
	wf.Node("b", "noop")
	wf.Node("c", "noop", "a", "b")
	hash, _, err := f.store.ApplyWorkflow(ctx, wf)
	if err != nil {
		t.Fatal(err)
	}
	for id, def := range map[string]string{"cut-short": hash, "no-def": "0000"} {
		if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: id, Workflow: "two-roots", Def: def, Input: []byte(`{"k":1}`), Created: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	steps, err := f.js.Stream(ctx, f.names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 {
		info, err := steps.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	at := func(d time.Duration, owner string) *checkpoint.Reaper {
		return checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Owner: owner, Clock: func() time.Time { return time.Now().Add(d) }})
	}
	// Within the grace the producer may still be publishing: nothing happens.
	if n, err := at(0, "a").Repair(ctx); err != nil || n != 0 || stored() != 0 {
		t.Fatalf("repair within the grace: %d runs, %v, %d steps stored; want nothing done", n, err, stored())
	}
	r := at(2*time.Minute, "a")
	if n, err := r.Repair(ctx); err != nil || n != 2 {
		t.Fatalf("repair: %d runs, %v; want 2 (one published, one ended)", n, err)
	}
	if n := stored(); n != 2 {
		t.Fatalf("%d steps stored, want the 2 roots of cut-short", n)
	}
	for _, node := range []string{"a", "b"} {
		m, err := steps.GetLastMsgForSubject(ctx, f.names.StepSubject("noop", "two-roots", node))
		if err != nil {
			t.Fatalf("root %s: %v", node, err)
		}
		env, err := workflow.DecodeEnvelope(m.Data)
		if err != nil || env.RunID != "cut-short" || env.Dispatch != workflow.DispatchFirst || m.Header.Get(workflow.HeaderMsgID) != "cut-short."+node ||
			string(env.Input) != `{"input":{"k":1},"nodes":{}}` {
			t.Fatalf("root %s: envelope %+v (%v), msg-id %q", node, env, err, m.Header.Get(workflow.HeaderMsgID))
		}
	}
	end, _, err := f.store.End(ctx, "no-def")
	if err != nil || end == nil || end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "definition 0000") {
		t.Fatalf("the run whose definition is gone: end %+v (%v), want failed naming the definition", end, err)
	}
	// Again, and from another reaper that starts reading afresh: the roots are not stored twice.
	if n, err := r.Repair(ctx); err != nil || n != 0 {
		t.Fatalf("second repair: %d, %v; want nothing to do", n, err)
	}
	if n, err := at(3*time.Minute, "a").Repair(ctx); err != nil || n != 0 || stored() != 2 {
		t.Fatalf("another reaper's repair: %d runs, %v, %d steps stored; want nothing new", n, err, stored())
	}
	// Past the duplicate window a queued root cannot be told from a missing one: left alone.
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: "too-old", Workflow: "two-roots", Def: hash, Input: []byte(`null`), Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if n, err := at(9*time.Minute, "a").Repair(ctx); err != nil || n != 0 || stored() != 2 {
		t.Fatalf("repair past the duplicate window: %d runs, %v, %d steps stored; want nothing done", n, err, stored())
	}
	// Another owner finds the lease held.
	if _, err := at(3*time.Minute, "b").Repair(ctx); !errors.Is(err, checkpoint.ErrLeaseHeld) {
		t.Fatalf("a second reaper's repair: %v, want ErrLeaseHeld", err)
	}
}
