package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestSweeperCatchesMaxDeliver: a step delivered MaxDeliver times without ever being acked
// (a consumer that takes it and dies, over and over) is moved to the DLQ by the sweeper of
// any worker, the run fails, and the step is deleted from the steps stream.
func TestSweeperCatchesMaxDeliver(t *testing.T) {
	t.Parallel()
	f := setup(t, "other")
	ctx := context.Background()
	// The "poison" type's consumer gives up after 2 deliveries, 1 s apart.
	if err := jsetup.EnsureConsumer(ctx, f.js, f.names, jsetup.ConsumerConfig{Type: "poison", AckWait: time.Second, MaxDeliver: 2}, true, 1, nil); err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("doomed")
	wf.Node("p", "poison")
	f.apply(wf)
	// A worker of another type: its sweeper still handles the advisory.
	f.worker(Config{}, func(w *Worker) { w.Handle("other", func(context.Context, *Step) (any, error) { return nil, nil }) })
	id := f.start("doomed", `{}`)
	cons, err := f.js.Consumer(ctx, f.names.StepsStream(), f.names.Consumer("poison"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // take the step and never answer, twice
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if md, _ := msg.Metadata(); md == nil {
			t.Fatal("no metadata")
		}
	}
	// The server notices MaxDeliver when it would deliver the step again: to a pull request
	// like the ones workers of the type keep open.
	if msg, err := cons.Next(jetstream.FetchMaxWait(3 * time.Second)); err == nil {
		t.Fatalf("the step was delivered a third time: %s", msg.Subject())
	}
	end := f.waitEnd(id, 30*time.Second)
	if end.Status != checkpoint.EndFailed {
		t.Fatalf("run ended %s", end.Status)
	}
	e := f.dlq(1)[0]
	if e.RunID != id || e.Node != "p" || e.Reason != "delivered 2 times without finishing (worker crash or timeout)" {
		t.Fatalf("DLQ entry %+v", e)
	}
	if st := f.node(id, "p"); st.Status != checkpoint.StatusDead || st.DLQSeq != e.ID {
		t.Fatalf("node state %+v", st)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		s, err := f.js.Stream(ctx, f.names.StepsStream())
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, "the poison step is still in the steps stream")
}
