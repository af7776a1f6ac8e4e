package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// publishCopy publishes the first-dispatch step of node again under another Nats-Msg-Id, as a
// buggy or replaying producer would.
func (f *fixture) publishCopy(run, wf, node, typ string, msgID string) {
	f.t.Helper()
	ref, err := f.store.WorkflowRef(context.Background(), wf)
	if err != nil {
		f.t.Fatal(err)
	}
	env := &workflow.Envelope{RunID: run, Workflow: wf, Def: ref.Hash, Node: node, Dispatch: workflow.DispatchFirst,
		Input: []byte(`{"input":null,"nodes":{}}`)}
	body, err := env.Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: f.names.StepSubject(typ, wf, node), Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderMsgID, msgID)
	if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
		f.t.Fatal(err)
	}
}

func TestDuplicateStepRunsHandlerOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("dup")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	f.apply(wf)
	// The run starts before any worker, and two more copies of its root wait beside it.
	id, err := f.prod.Start(context.Background(), "dup", nil, producer.StartOptions{ID: "run-dup"})
	if err != nil {
		t.Fatal(err)
	}
	f.publishCopy(id, "dup", "a", "work", "copy-1")
	f.publishCopy(id, "dup", "a", "work", "copy-2")
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			runs.inc(s)
			time.Sleep(50 * time.Millisecond) // keep the copies in flight together
			return s.Node, nil
		})
	})
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s", end.Status)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.pending("work") == 0 }, "steps left in the stream")
	if runs.get(id, "a") != 1 || runs.get(id, "b") != 1 {
		t.Fatalf("handler runs a=%d b=%d, want 1 and 1", runs.get(id, "a"), runs.get(id, "b"))
	}
}

func TestRedeliveryAfterDoneOnlyFansOut(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("redo")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return s.Node, nil })
	})
	id := f.start("redo", `{}`)
	f.waitEnd(id, 20*time.Second)
	before := f.node(id, "a")
	// a's step arrives again long after it is done (another msg-id, so not deduplicated).
	f.publishCopy(id, "redo", "a", "work", "late-copy")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.pending("work") == 0 }, "late copy not consumed")
	after := f.node(id, "a")
	if runs.get(id, "a") != 1 || runs.get(id, "b") != 1 {
		t.Fatalf("handler runs a=%d b=%d, want 1 and 1", runs.get(id, "a"), runs.get(id, "b"))
	}
	if string(after.Output) != string(before.Output) || !after.EndedAt.Equal(before.EndedAt) {
		t.Fatalf("a's recorded result changed: %+v → %+v", before, after)
	}
}

func TestFanInRaceRunsChildOnce(t *testing.T) {
	t.Parallel()
	const runsN = 200
	f := setup(t, "left", "right", "join")
	wf := workflow.New("race")
	wf.Node("root", "join")
	wf.Node("l", "left", "root")
	wf.Node("r", "right", "root")
	wf.Node("child", "join", "l", "r")
	f.apply(wf)

	// barrier releases both parents of a run at the same instant.
	var mu sync.Mutex
	barriers := map[string]*sync.WaitGroup{}
	barrier := func(run string) *sync.WaitGroup {
		mu.Lock()
		defer mu.Unlock()
		b := barriers[run]
		if b == nil {
			b = &sync.WaitGroup{}
			b.Add(2)
			barriers[run] = b
		}
		return b
	}
	var runs counter
	parent := func(ctx context.Context, s *Step) (any, error) {
		runs.inc(s)
		b := barrier(s.RunID)
		b.Done()
		b.Wait()
		return s.Node, nil
	}
	f.worker(Config{Concurrency: runsN + 8}, func(w *Worker) {
		w.Handle("left", parent)
		w.Handle("right", parent)
		w.Handle("join", func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return s.Node, nil })
	})
	ids := make([]string, runsN)
	for i := range ids {
		ids[i] = f.start("race", fmt.Sprintf(`{"i":%d}`, i))
	}
	for _, id := range ids {
		if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s", id, end.Status)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.pending("join") == 0 }, "steps left in the stream")
	for _, id := range ids {
		if n := runs.get(id, "child"); n != 1 {
			t.Fatalf("run %s: child ran %d times, want 1", id, n)
		}
	}
}

func TestMalformedMessageGoesToDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t)
	wf := workflow.New("ok")
	wf.Node("a", "noop")
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) { w.Handle("noop", func(context.Context, *Step) (any, error) { return nil, nil }) })
	bodies := []string{"\x00\x01 not json", `{"v":2}`, `{"v":1,"run_id":"a.b","workflow":"w","def":"x","node":"n","dispatch":"d"}`}
	for i, b := range bodies {
		if _, err := f.js.Publish(context.Background(), f.names.StepSubject("noop", "ok", "a"), []byte(b), jetstreamMsgID(fmt.Sprint("garbage-", i))); err != nil {
			t.Fatal(err)
		}
	}
	entries := f.dlq(len(bodies))
	for _, e := range entries {
		if len(e.Reason) < 9 || e.Reason[:9] != "malformed" {
			t.Fatalf("DLQ reason %q, want it to start with malformed", e.Reason)
		}
	}
	// The worker keeps working.
	id := f.start("ok", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run after garbage ended %s", end.Status)
	}
}

// TestCopyOfAStepHeldInFlightIsNotLost: a copy of a step delivered while another copy holds
// the step in this worker must not be dropped, since the holder may end without finishing
// the step. Here the holder is a forged copy of a root that came before its run's start
// request (it goes to the DLQ as a step of an unknown run once this worker reads no record).
// The real root, delivered meanwhile, was acknowledged as "a duplicate of a step in flight",
// so the run never ran (TestDuplicateStepRunsHandlerOnce failed so under load). The test
// holds the claim itself, lets the real root be delivered, then releases it.
func TestCopyOfAStepHeldInFlightIsNotLost(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("held")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	f.apply(wf)
	var runs counter
	w, _, _ := f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			runs.inc(s)
			return s.Node, nil
		})
	})
	const id = "run-held"
	held, ok := w.claim(workflow.IdempotencyKey(id, "a"), inflight{seq: 1 << 62, dispatch: workflow.DispatchFirst, run: id})
	if !ok {
		t.Fatal("could not hold the root")
	}
	if _, err := f.prod.Start(context.Background(), "held", nil, producer.StartOptions{ID: id}); err != nil {
		t.Fatal(err)
	}
	cons, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer("work"))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.Delivered.Consumer >= 1
	}, "the root was never delivered")
	w.unclaim(held)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s", end.Status)
	}
	if runs.get(id, "a") != 1 || runs.get(id, "b") != 1 {
		t.Fatalf("handler runs a=%d b=%d, want 1 and 1", runs.get(id, "a"), runs.get(id, "b"))
	}
}
