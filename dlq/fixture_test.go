package dlq_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// fixture is a server set up for jetflow, with a store and a producer.
type fixture struct {
	t     *testing.T
	srv   *natstest.Server
	names workflow.Names
	js    jetstream.JetStream
	store *checkpoint.Store
	prod  *producer.Producer
}

func setup(t *testing.T, extraTypes ...string) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 2*time.Second, extraTypes...)
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

func (f *fixture) start(wf, input string) string {
	f.t.Helper()
	id, err := f.prod.Start(context.Background(), wf, []byte(input), producer.StartOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	// The tests here may run no worker: take the start request as one would.
	if _, err := consumer.StartRuns(context.Background(), f.js, f.store, f.names); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// worker runs a worker on its own connection until the test ends; reg registers handlers.
func (f *fixture) worker(reg func(w *consumer.Worker)) {
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
	w, err := consumer.New(js, store, consumer.Config{Names: f.names, PollWait: 200 * time.Millisecond, DrainTimeout: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	reg(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("worker: %v", err)
		}
		nc.Close()
	})
}

// waitEnd waits until the run ends with status and returns its end.
func (f *fixture) waitEnd(run, status string) *checkpoint.End {
	f.t.Helper()
	var end *checkpoint.End
	natstest.Eventually(f.t, 20*time.Second, func() bool {
		e, _, err := f.store.End(context.Background(), run)
		end = e
		return err == nil && e != nil && e.Status == status
	}, "run %s did not end %s (end: %+v)", run, status, end)
	return end
}

// entries waits until the DLQ holds n entries and returns them.
func (f *fixture) entries(n int) []*dlq.Entry {
	f.t.Helper()
	var entries []*dlq.Entry
	natstest.Eventually(f.t, 20*time.Second, func() bool {
		var err error
		entries, err = dlq.List(context.Background(), f.js, f.names, dlq.Filter{})
		return err == nil && len(entries) >= n
	}, "DLQ did not reach %d entries", n)
	if len(entries) != n {
		f.t.Fatalf("DLQ has %d entries, want %d", len(entries), n)
	}
	return entries
}

func (f *fixture) node(run, node string) *checkpoint.Node {
	f.t.Helper()
	st, _, err := f.store.Node(context.Background(), run, node)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// calls counts handler runs per run.node and keeps the inputs they got.
type calls struct {
	mu     sync.Mutex
	n      map[string]int
	inputs map[string][]string
}

func (c *calls) add(s *consumer.Step) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n, c.inputs = map[string]int{}, map[string][]string{}
	}
	c.n[s.IdempotencyKey]++
	c.inputs[s.IdempotencyKey] = append(c.inputs[s.IdempotencyKey], string(s.Input))
}

func (c *calls) get(run, node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[workflow.IdempotencyKey(run, node)]
}

func (c *calls) input(run, node string, i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inputs[workflow.IdempotencyKey(run, node)]
	if i >= len(in) {
		return ""
	}
	return in[i]
}
