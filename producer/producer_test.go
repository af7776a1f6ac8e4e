package producer_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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

// TestStartWithTheSameIDStartsOneRun: starts with one ID and one input publish one start
// request, which a worker turns into one run; once the run is recorded, another input under
// that ID is refused before anything is published, and the same input starts nothing new.
func TestStartWithTheSameIDStartsOneRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started []string
	p := producer.New(f.js, f.store, producer.Config{Names: f.names, OnStart: func(w string) { started = append(started, w) }})
	for range 3 {
		id, err := p.Start(ctx, "one", []byte(` {"k": 1} `), producer.StartOptions{ID: "order-42"})
		if err != nil || id != "order-42" {
			t.Fatalf("start: %q, %v", id, err)
		}
	}
	if n := f.steps(); n != 1 || len(started) != 1 {
		t.Fatalf("%d messages stored and %d starts counted; want one start request and one start", n, len(started))
	}
	if _, err := f.store.Run(ctx, "order-42"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("run record before any worker took the start request: %v, want none (workers write it)", err)
	}
	var ran atomic.Int32
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	f.runWorker(ctx, &wg, &ran)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if end, err := f.store.WaitEnd(wctx, "order-42"); err != nil || end.Status != checkpoint.EndCompleted {
		t.Fatalf("run order-42: %+v, %v; want completed", end, err)
	}
	r, err := f.store.Run(ctx, "order-42")
	if err != nil || string(r.Input) != `{"k":1}` || r.Workflow != "one" {
		t.Fatalf("run record %+v (%v)", r, err)
	}
	before := f.steps()
	if _, err := p.Start(ctx, "one", []byte(`{"k": 2}`), producer.StartOptions{ID: "order-42"}); !errors.Is(err, producer.ErrRunExists) {
		t.Fatalf("same ID, other input: %v, want ErrRunExists", err)
	}
	if id, err := p.Start(ctx, "one", []byte(`{"k":1}`), producer.StartOptions{ID: "order-42"}); err != nil || id != "order-42" {
		t.Fatalf("same ID and input after the run ended: %q, %v", id, err)
	}
	if n := f.steps(); n != before || ran.Load() != 1 || len(started) != 1 {
		t.Fatalf("%d messages stored (was %d), handler ran %d times, %d starts counted: want nothing new", n, before, ran.Load(), len(started))
	}
	id, err := p.Start(ctx, "one", nil, producer.StartOptions{})
	if err != nil || len(id) != 36 || id[14] != '7' {
		t.Fatalf("generated ID %q is not a UUIDv7 (%v)", id, err)
	}
}

// runWorker runs a worker that serves noop, counting its handler runs in ran, until ctx ends.
func (f *fixture) runWorker(ctx context.Context, wg *sync.WaitGroup, ran *atomic.Int32) {
	f.t.Helper()
	w, err := consumer.New(f.js, f.store, consumer.Config{Names: f.names, PollWait: 200 * time.Millisecond})
	if err != nil {
		f.t.Fatal(err)
	}
	w.Handle("noop", func(context.Context, *consumer.Step) (any, error) { ran.Add(1); return "ran", nil })
	wg.Go(func() { _ = w.Run(ctx) })
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

// TestStartReturnsTheIDOfARunItCouldNotFinish: when the start request cannot be published,
// Start returns the run's ID with the error and nothing is recorded, so the caller can start
// it again with that ID.
func TestStartReturnsTheIDOfARunItCouldNotFinish(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.refuseSteps(true)
	id, err := f.prod.Start(ctx, "one", []byte(`{"k":1}`), producer.StartOptions{})
	if err == nil {
		t.Fatal("Start succeeded while the steps stream refuses every message")
	}
	if id == "" {
		t.Fatalf("Start returned no run ID with its error (%v)", err)
	}
	if _, err := f.store.Run(ctx, id); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("run %s: %v, want no record", id, err)
	}
	f.refuseSteps(false)
	again, err := f.prod.Start(ctx, "one", []byte(`{"k":1}`), producer.StartOptions{ID: id})
	if err != nil || again != id {
		t.Fatalf("starting again with the returned ID: %q, %v", again, err)
	}
	if n := f.steps(); n != 1 {
		t.Fatalf("%d messages stored after the second start, want the start request once", n)
	}
}

// TestOrphanRunIsRepaired: a run whose record was written but whose root step never was (a
// producer of an older version that wrote records itself failed or died in between) is not
// left `running` for ever: the reaper publishes its root, and a worker completes it.
func TestOrphanRunIsRepaired(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ref, err := f.store.WorkflowRef(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: "orphan-1", Workflow: "one", Def: ref.Hash, Input: []byte("null"), Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
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
