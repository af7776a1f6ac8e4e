package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// orders makes the user's stream ORDERS (orders.>) and applies workflow "intake" (one work
// node) triggered by orders.new, with its consumer's ack wait cut to ackWait.
func (f *fixture) orders(ackWait time.Duration) *workflow.Workflow {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		f.t.Fatal(err)
	}
	wf := workflow.New("intake")
	wf.Node("take", "work")
	wf.On = &workflow.Trigger{Stream: "ORDERS", Subject: "orders.new"}
	f.apply(wf)
	if _, err := jsetup.ApplyTrigger(ctx, f.js, f.names, nil, wf); err != nil {
		f.t.Fatal(err)
	}
	cons, err := f.js.Consumer(ctx, "ORDERS", f.names.TriggerConsumer("intake"))
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = ackWait
	if _, err := f.js.UpdateConsumer(ctx, "ORDERS", cfg); err != nil {
		f.t.Fatal(err)
	}
	return wf
}

func (f *fixture) publishOrder(subject, body string) uint64 {
	f.t.Helper()
	ack, err := f.js.Publish(context.Background(), subject, []byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	return ack.Sequence
}

// One run per message of the trigger's stream and filter, ID <workflow>-<seq>, its body the
// input; a body that is not JSON is a DLQ entry and no run; a message on another subject
// starts nothing; applying the workflow without `on` removes the consumer.
func TestTriggerStartsOneRunPerMessage(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := f.orders(30 * time.Second)
	var runs counter
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, f.publishOrder("orders.new", fmt.Sprintf(`{"order": %d}`, i)))
	}
	bad := f.publishOrder("orders.new", "not json {")
	f.publishOrder("orders.cancelled", `{"order": 9}`)
	for i, seq := range seqs {
		id := workflow.TriggerRunID("intake", seq)
		if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
		rec, err := f.store.Run(context.Background(), id)
		if err != nil || string(rec.Input) != fmt.Sprintf(`{"order":%d}`, i) {
			t.Errorf("run %s input %s (%v), want the message body", id, rec.Input, err)
		}
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		entries, err := dlq.List(context.Background(), f.js, f.names, dlq.Filter{Workflow: "intake"})
		return err == nil && len(entries) == 1 && entries[0].Reason == "trigger: not JSON" && entries[0].Node == workflow.TriggerNode
	}, "the body that is not JSON never reached the DLQ")
	if _, err := f.store.Run(context.Background(), workflow.TriggerRunID("intake", bad)); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("the message that is not JSON started a run (%v)", err)
	}
	runsOf, err := f.store.ListRuns(context.Background(), checkpoint.RunFilter{Workflow: "intake"})
	if err != nil || len(runsOf) != 3 {
		t.Errorf("%d runs of intake (%v), want 3: the orders.cancelled message starts nothing", len(runsOf), err)
	}
	// Applying the workflow without `on` removes the consumer.
	plain := workflow.New("intake")
	plain.Node("take", "work")
	f.apply(plain)
	if _, err := jsetup.ApplyTrigger(context.Background(), f.js, f.names, wf, plain); err != nil {
		t.Fatal(err)
	}
	if _, err := f.js.Consumer(context.Background(), "ORDERS", f.names.TriggerConsumer("intake")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the trigger consumer is still there after on was removed: %v", err)
	}
}

// A worker that dies after starting a trigger's run, before acking the message, starts
// nothing twice: the message comes back, and its run ID is the one already started.
func TestTriggerCrashAfterStart(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	f.orders(2 * time.Second)
	var runs counter
	var died atomic.Bool
	var nc1 *nats.Conn
	_, nc1, _ = f.worker(Config{hook: func(p string) bool {
		if p != pointTriggerStarted || !died.CompareAndSwap(false, true) {
			return false
		}
		nc1.Close()
		return true
	}}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	seq := f.publishOrder("orders.new", `{"order": 1}`)
	natstest.Eventually(t, 30*time.Second, died.Load, "the worker never reached %s", pointTriggerStarted)
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	id := workflow.TriggerRunID("intake", seq)
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
	}
	// The message is acked by the second worker (the consumer has nothing pending).
	natstest.Eventually(t, 30*time.Second, func() bool {
		cons, err := f.js.Consumer(context.Background(), "ORDERS", f.names.TriggerConsumer("intake"))
		if err != nil {
			return false
		}
		ci, err := cons.Info(context.Background())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.Delivered.Consumer >= 2
	}, "the redelivered message was never acked")
	runsOf, err := f.store.ListRuns(context.Background(), checkpoint.RunFilter{Workflow: "intake"})
	if err != nil || len(runsOf) != 1 || runs.get(id, "take") != 1 {
		t.Errorf("%d runs (%v), take ran %d times: want one of each", len(runsOf), err, runs.get(id, "take"))
	}
}

// BenchmarkTriggerBurst: 10,000 messages waiting on a trigger's stream, then one worker:
// how fast the trigger takes them (each a start request published and acked, the message
// acked). Run with -benchtime 1x.
func BenchmarkTriggerBurst(b *testing.B) {
	const n = 10_000
	for range b.N {
		b.StopTimer()
		f := setup(b, "work")
		f.orders(30 * time.Second)
		for i := range n {
			if _, err := f.js.PublishAsync("orders.new", fmt.Appendf(nil, `{"order": %d}`, i)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-f.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("publishing the burst took over a minute")
		}
		ctx := context.Background()
		cons, err := f.js.Consumer(ctx, "ORDERS", f.names.TriggerConsumer("intake"))
		if err != nil {
			b.Fatal(err)
		}
		var runs counter
		start := time.Now()
		b.StartTimer()
		f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
		deadline := time.Now().Add(5 * time.Minute)
		for {
			ci, err := cons.Info(ctx)
			if err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the burst was not taken within 5 minutes")
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.StopTimer()
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "starts/s")
	}
}

// A schedule's fire taken by a worker that dies after recording its run, before publishing
// the run's first step, comes back to another worker as the same run: the run ID comes from
// the fire's time, so nothing starts twice and nothing is lost; later fires are runs of their
// own.
func TestScheduleFireCrashAfterRecord(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("digest")
	wf.Node("post", "work")
	f.apply(wf)
	var runs counter
	var died atomic.Bool
	var nc1 *nats.Conn
	_, nc1, _ = f.worker(Config{hook: func(p string) bool {
		if p != pointStartRecorded || !died.CompareAndSwap(false, true) {
			return false
		}
		nc1.Close()
		return true
	}}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	ctx := context.Background()
	if err := producer.PublishSchedule(ctx, f.js, f.names, "tick", "digest", nil, "@every 1s", ""); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, died.Load, "the worker never took a fire")
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	time.Sleep(3 * time.Second) // a few more fires
	if err := producer.RemoveSchedule(ctx, f.js, f.names, "tick"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	natstest.Eventually(t, 60*time.Second, func() bool {
		list, err := f.store.ListRuns(ctx, checkpoint.RunFilter{Workflow: "digest"})
		if err != nil {
			return false
		}
		ids = ids[:0]
		for _, r := range list {
			if r.Status != checkpoint.EndCompleted {
				return false // the crashed fire's run, until its redelivery (ack wait 2 s)
			}
			ids = append(ids, r.ID)
		}
		return len(ids) >= 3
	}, "the fires never all became completed runs")
	for _, id := range ids {
		if n := runs.get(id, "post"); n != 1 {
			t.Errorf("run %s: post ran %d times, want 1", id, n)
		}
	}
}
