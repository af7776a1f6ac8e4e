package producer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartWithTheSameIDStartsOneRun(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("two-roots")
	wf.Node("a", "noop")
	wf.Node("b", "noop")
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	var started []string
	p := producer.New(js, store, producer.Config{Names: names, OnStart: func(w string) { started = append(started, w) }})
	for range 3 {
		id, err := p.Start(ctx, "two-roots", []byte(` {"k": 1} `), producer.StartOptions{ID: "order-42"})
		if err != nil || id != "order-42" {
			t.Fatalf("start: %q, %v", id, err)
		}
	}
	if _, err := p.Start(ctx, "two-roots", []byte(`{"k": 2}`), producer.StartOptions{ID: "order-42"}); !errors.Is(err, producer.ErrRunExists) {
		t.Fatalf("same ID, other input: %v", err)
	}
	s, _ := js.Stream(ctx, names.StepsStream())
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || len(started) != 1 {
		t.Fatalf("%d steps stored and %d starts counted; want the 2 roots once and 1 start", info.State.Msgs, len(started))
	}
	r, err := store.Run(ctx, "order-42")
	if err != nil || string(r.Input) != `{"k":1}` || r.Workflow != "two-roots" {
		t.Fatalf("run record %+v (%v)", r, err)
	}
	id, err := p.Start(ctx, "two-roots", nil, producer.StartOptions{})
	if err != nil || len(id) != 36 || id[14] != '7' {
		t.Fatalf("generated ID %q is not a UUIDv7 (%v)", id, err)
	}
}

// fixture is a server set up for jetflow with a store, a producer and a one-root workflow.
type fixture struct {
	t     *testing.T
	srv   *natstest.Server
	names workflow.Names
	js    jetstream.JetStream
	store *checkpoint.Store
	prod  *producer.Producer
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("one")
	wf.Node("a", "noop")
	if _, _, err := store.ApplyWorkflow(context.Background(), wf); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, srv: srv, names: names, js: js, store: store, prod: producer.New(js, store, producer.Config{Names: names})}
}

// refuseSteps makes the steps stream refuse every step (too large) while on is true, and
// take them again after.
func (f *fixture) refuseSteps(on bool) {
	f.t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, f.names.StepsStream())
	if err != nil {
		f.t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.MaxMsgSize = -1
	if on {
		sc.MaxMsgSize = 16
	}
	if _, err := f.js.UpdateStream(ctx, sc); err != nil {
		f.t.Fatal(err)
	}
}

// steps is how many messages the steps stream holds.
func (f *fixture) steps() uint64 {
	f.t.Helper()
	s, err := f.js.Stream(context.Background(), f.names.StepsStream())
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestStartReturnsTheIDOfARunItCouldNotFinish: when the run record is written but its root
// step cannot be published, Start still returns the run's ID with the error, so the caller
// can start it again with that ID (which publishes the roots) or look at it.
func TestStartReturnsTheIDOfARunItCouldNotFinish(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.refuseSteps(true)
	id, err := f.prod.Start(ctx, "one", []byte(`{"k":1}`), producer.StartOptions{})
	if err == nil {
		t.Fatal("Start succeeded while the steps stream refuses every step")
	}
	if id == "" {
		t.Fatalf("Start returned no run ID with its error (%v): the run record it wrote cannot be found again", err)
	}
	if _, err := f.store.Run(ctx, id); err != nil {
		t.Fatalf("run %s has no record: %v", id, err)
	}
	f.refuseSteps(false)
	again, err := f.prod.Start(ctx, "one", []byte(`{"k":1}`), producer.StartOptions{ID: id})
	if err != nil || again != id {
		t.Fatalf("starting again with the returned ID: %q, %v", again, err)
	}
	if n := f.steps(); n != 1 {
		t.Fatalf("%d steps stored after the second start, want the root once", n)
	}
}

// TestOrphanRunIsRepaired: a run whose record was written but whose root step never was (the
// producer failed or died in between) is not left `running` for ever: the reaper publishes
// its root, and a worker completes it.
func TestOrphanRunIsRepaired(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.refuseSteps(true)
	if _, err := f.prod.Start(ctx, "one", nil, producer.StartOptions{ID: "orphan-1"}); err == nil {
		t.Fatal("Start succeeded while the steps stream refuses every step")
	}
	f.refuseSteps(false)
	if n := f.steps(); n != 0 {
		t.Fatalf("%d steps stored, want none", n)
	}
	// The reaper, two minutes on: the record is past the grace.
	later := func() time.Time { return time.Now().Add(2 * time.Minute) }
	r := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: later, Owner: "test-reaper"})
	// Take the lease before the worker's own reaper (which runs on the real clock) can.
	if _, err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { _ = r.Run(ctx) })
	w, err := consumer.New(f.js, f.store, consumer.Config{Names: f.names, PollWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("noop", func(context.Context, *consumer.Step) (any, error) { return "ran", nil })
	wg.Go(func() { _ = w.Run(ctx) })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	end, err := f.store.WaitEnd(wctx, "orphan-1")
	if err != nil {
		t.Fatalf("the orphan run never ended: %v", err)
	}
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("the orphan run ended %s (%s), want completed", end.Status, end.Reason)
	}
	if st, _, err := f.store.Node(ctx, "orphan-1", "a"); err != nil || st == nil || string(st.Output) != `"ran"` {
		t.Fatalf("root state %+v (%v), want done with the handler's output", st, err)
	}
}
