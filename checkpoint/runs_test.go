package checkpoint_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// fixture is a server set up for jetflow with a store.
type fixture struct {
	t     *testing.T
	names workflow.Names
	js    jetstream.JetStream
	store *checkpoint.Store
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 2*time.Second)
	_, js := srv.Connect(t)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, names: names, js: js, store: store}
}

// run records a run created at created, ended with status at ended unless status is "".
func (f *fixture) run(id, wf string, created time.Time, status string, ended time.Time) {
	f.t.Helper()
	ctx := context.Background()
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: id, Workflow: wf, Def: "d", Input: []byte(`{}`), Created: created}); err != nil {
		f.t.Fatal(err)
	}
	if status == "" {
		return
	}
	if ok, err := f.store.CreateEnd(ctx, id, &checkpoint.End{Status: status, Reason: "because", At: ended}); err != nil || !ok {
		f.t.Fatalf("end %s: %v, %v", id, ok, err)
	}
}

func ids(runs []*checkpoint.RunSummary) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.ID)
	}
	return out
}

func TestListRuns(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Second)
	f.run("r1", "a", base.Add(-4*time.Hour), checkpoint.EndCompleted, base.Add(-4*time.Hour+time.Minute))
	f.run("r2", "b", base.Add(-3*time.Hour), checkpoint.EndFailed, base.Add(-3*time.Hour+time.Minute))
	f.run("r3", "a", base.Add(-2*time.Hour), checkpoint.EndCancelled, base.Add(-2*time.Hour+time.Minute))
	f.run("r4", "b", base.Add(-time.Hour), "", time.Time{})
	f.run("r0", "a", base.Add(-time.Hour), "", time.Time{}) // same time as r4: by ID, descending

	for _, c := range []struct {
		name string
		f    checkpoint.RunFilter
		want []string
	}{
		{"all", checkpoint.RunFilter{}, []string{"r4", "r0", "r3", "r2", "r1"}},
		{"status failed", checkpoint.RunFilter{Status: checkpoint.EndFailed}, []string{"r2"}},
		{"status running", checkpoint.RunFilter{Status: checkpoint.RunRunning}, []string{"r4", "r0"}},
		{"workflow a", checkpoint.RunFilter{Workflow: "a"}, []string{"r0", "r3", "r1"}},
		{"since", checkpoint.RunFilter{Since: base.Add(-150 * time.Minute)}, []string{"r4", "r0", "r3"}},
		{"limit", checkpoint.RunFilter{Limit: 2}, []string{"r4", "r0"}},
		{"none", checkpoint.RunFilter{Workflow: "zzz"}, nil},
	} {
		got, err := f.store.ListRuns(ctx, c.f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(ids(got), c.want) {
			t.Errorf("%s: %v, want %v", c.name, ids(got), c.want)
		}
	}
	got, _ := f.store.ListRuns(ctx, checkpoint.RunFilter{Status: checkpoint.EndFailed})
	if r := got[0]; r.Workflow != "b" || r.Reason != "because" || r.EndedAt == nil || !r.CreatedAt.Equal(base.Add(-3*time.Hour)) {
		t.Errorf("summary: %+v", r)
	}
	if _, err := f.store.ListRuns(ctx, checkpoint.RunFilter{Status: "done"}); err == nil {
		t.Error("an unknown status should be an error")
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	f.run("live", "a", now, "", time.Time{})
	f.run("done", "a", now, checkpoint.EndCompleted, now)

	ok, err := f.store.Cancel(ctx, "live", "")
	if err != nil || !ok {
		t.Fatalf("Cancel: %v, %v", ok, err)
	}
	if c, err := f.store.Cancelled(ctx, "live"); err != nil || !c {
		t.Errorf("cancel.live should exist: %v, %v", c, err)
	}
	end, _, err := f.store.End(ctx, "live")
	if err != nil || end == nil || end.Status != checkpoint.EndCancelled || end.Reason != checkpoint.DefaultCancelReason {
		t.Errorf("end: %+v, %v", end, err)
	}
	if ok, err := f.store.Cancel(ctx, "live", "again"); err != nil || ok {
		t.Errorf("a second Cancel should be a no-op: %v, %v", ok, err)
	}
	var ended *checkpoint.EndedError
	if _, err := f.store.Cancel(ctx, "done", ""); !errors.As(err, &ended) || ended.End.Status != checkpoint.EndCompleted {
		t.Errorf("Cancel of a completed run: want EndedError, got %v", err)
	}
	if c, _ := f.store.Cancelled(ctx, "done"); c {
		t.Error("a refused cancel must not write cancel.<run>")
	}
	if _, err := f.store.Cancel(ctx, "nope", ""); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Cancel of an unknown run: want ErrNotFound, got %v", err)
	}
	// A crash between cancel.<run> and end.<run>: the next Cancel finishes it.
	f.run("half", "a", now, "", time.Time{})
	if _, err := f.store.KV().Create(ctx, workflow.CancelKey("half"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.store.Cancel(ctx, "half", "x"); err != nil || !ok {
		t.Errorf("Cancel after a half cancel: %v, %v", ok, err)
	}
	if end, _, _ := f.store.End(ctx, "half"); end == nil || end.Status != checkpoint.EndCancelled || end.Reason != "x" {
		t.Errorf("end of half: %+v", end)
	}
}

func TestWatchRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f.run("w", "a", time.Now().UTC(), "", time.Time{})
	if _, err := f.store.PutNode(ctx, "w", "a", &checkpoint.Node{Status: checkpoint.StatusDone, Attempts: 1}, 0); err != nil {
		t.Fatal(err)
	}
	events := make(chan checkpoint.RunEvent, 16)
	type result struct {
		end *checkpoint.End
		err error
	}
	done := make(chan result, 1)
	go func() {
		end, err := f.store.WatchRun(ctx, "w", func(ev checkpoint.RunEvent) { events <- ev })
		done <- result{end, err}
	}()
	if ev := <-events; ev.Node != "a" || ev.State.Status != checkpoint.StatusDone || ev.At.IsZero() {
		t.Fatalf("first event: %+v", ev)
	}
	rev, err := f.store.PutNode(ctx, "w", "b", &checkpoint.Node{Status: checkpoint.StatusRunning}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The bucket keeps one revision a key: a value overwritten before the watch delivered it
	// is gone, so the next write waits for it.
	running := <-events
	if running.Node != "b" || running.State.Status != checkpoint.StatusRunning {
		t.Fatalf("second event: %+v, want b running", running)
	}
	if _, err := f.store.PutNode(ctx, "w", "b", &checkpoint.Node{Status: checkpoint.StatusDone, Attempts: 1}, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateEnd(ctx, "w", &checkpoint.End{Status: checkpoint.EndCompleted, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.end == nil || r.end.Status != checkpoint.EndCompleted {
		t.Fatalf("WatchRun: %+v, %v", r.end, r.err)
	}
	close(events)
	var got []string
	for ev := range events {
		if ev.End != nil {
			got = append(got, "end "+ev.End.Status)
		} else {
			got = append(got, ev.Node+" "+ev.State.Status)
		}
	}
	if want := []string{"b done", "end completed"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}

	// An ended run: every node, then the end, and WatchRun returns.
	var again []string
	end, err := f.store.WatchRun(ctx, "w", func(ev checkpoint.RunEvent) {
		if ev.End == nil {
			again = append(again, ev.Node)
		}
	})
	if err != nil || end.Status != checkpoint.EndCompleted || !slices.Equal(again, []string{"a", "b"}) {
		t.Errorf("WatchRun of an ended run: %+v, %v, nodes %v", end, err, again)
	}
	if _, err := f.store.WatchRun(ctx, "nope", func(checkpoint.RunEvent) {}); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("WatchRun of an unknown run: %v", err)
	}
}
