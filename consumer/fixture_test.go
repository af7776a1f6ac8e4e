package consumer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// fixture is a server set up for jetflow, with a store and a producer.
type fixture struct {
	t     testing.TB
	srv   *natstest.Server
	names workflow.Names
	js    jetstream.JetStream
	store *checkpoint.Store
	prod  *producer.Producer
}

const testAckWait = 2 * time.Second

func setup(t testing.TB, extraTypes ...string) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", testAckWait, extraTypes...)
	_, js := srv.Connect(t)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, srv: srv, names: names, js: js, store: store,
		prod: producer.New(js, store, producer.Config{Names: names})}
}

func (f *fixture) apply(w *workflow.Workflow) {
	f.t.Helper()
	if err := w.Validate(workflow.ValidateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	if _, _, err := f.store.ApplyWorkflow(context.Background(), w); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) start(wf string, input string) string {
	f.t.Helper()
	id, err := f.prod.Start(context.Background(), wf, []byte(input), producer.StartOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// worker starts a worker on its own connection; stop it with the returned func (also at
// test end). Handlers are registered by reg.
func (f *fixture) worker(cfg Config, reg func(w *Worker)) (*Worker, *nats.Conn, func()) {
	f.t.Helper()
	nc, err := nats.Connect(f.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		f.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	store, err := checkpoint.Open(context.Background(), js, f.names)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.Names = f.names
	cfg.PollWait = 200 * time.Millisecond
	cfg.DrainTimeout = 5 * time.Second
	w, err := New(js, store, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	reg(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("worker: %v", err)
			}
			nc.Close()
		})
	}
	f.t.Cleanup(stop)
	return w, nc, stop
}

// waitEnd waits for the run to end and returns its end.
func (f *fixture) waitEnd(run string, timeout time.Duration) *checkpoint.End {
	f.t.Helper()
	var end *checkpoint.End
	natstest.Eventually(f.t, timeout, func() bool {
		e, _, err := f.store.End(context.Background(), run)
		end = e
		return err == nil && e != nil
	}, "run %s did not end", run)
	return end
}

func (f *fixture) node(run, node string) *checkpoint.Node {
	f.t.Helper()
	st, _, err := f.store.Node(context.Background(), run, node)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}
