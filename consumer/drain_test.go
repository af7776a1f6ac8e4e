package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestDrainHandsBackUnstartedSteps stops a worker while a step runs and others wait in its
// prefetch buffer: the running step finishes and is recorded, and every other step is handed
// back at once (nothing is left ack-pending to wait out its ack wait).
func TestDrainHandsBackUnstartedSteps(t *testing.T) {
	t.Parallel()
	f := setup(t, "slow")
	// A long ack wait: a step that was not handed back would stay ack-pending for 60 s.
	if err := jsetup.EnsureConsumer(context.Background(), f.js, f.names, jsetup.ConsumerConfig{Type: "slow", AckWait: time.Minute}, true, 1, nil); err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("drain")
	wf.Node("a", "slow")
	f.apply(wf)
	started := make(chan string, 16)
	release := make(chan struct{})
	_, _, stop := f.worker(Config{Concurrency: 2}, func(w *Worker) {
		w.Handle("slow", func(ctx context.Context, s *Step) (any, error) {
			started <- s.RunID
			<-release
			return "finished", nil
		})
	})
	var ids []string
	for range 6 {
		ids = append(ids, f.start("drain", `{}`))
	}
	for _, id := range ids { // every start request taken, so each run's step is queued
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := f.store.WaitRun(ctx, id); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	first := <-started
	<-started
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond) // let the drain begin while both handlers still run
	close(release)
	<-stopped
	if st := f.node(first, "a"); st == nil || st.Status != checkpoint.StatusDone {
		t.Fatalf("the running step was not recorded: %+v", st)
	}
	c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer("slow"))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 4
	}, "the 4 unstarted steps were not handed back")
	// Another worker finishes the rest.
	f.worker(Config{}, func(w *Worker) {
		w.Handle("slow", func(ctx context.Context, s *Step) (any, error) { return "ok", nil })
	})
	for _, id := range ids {
		if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s", id, end.Status)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return f.pending("slow") == 0 }, "steps left")
}
