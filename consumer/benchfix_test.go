package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// setupB is setup for benchmarks (default ack wait).
func setupB(b testing.TB) *fixture {
	b.Helper()
	srv := natstest.Start(b)
	names := srv.Setup(b, "jetflow", 30*time.Second)
	_, js := srv.Connect(b)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		b.Fatal(err)
	}
	return &fixture{srv: srv, names: names, js: js, store: store, prod: producer.New(js, store, producer.Config{Names: names})}
}

func startOpts() producer.StartOptions { return producer.StartOptions{} }

// countEnds counts end.* keys as they appear.
func (f *fixture) countEnds(b *testing.B) *atomic.Int64 {
	var n atomic.Int64
	w, err := f.store.KV().Watch(context.Background(), workflow.EndKey("*"), jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for e := range w.Updates() {
			if e != nil {
				n.Add(1)
			}
		}
	}()
	b.Cleanup(func() { _ = w.Stop() })
	return &n
}

func waitCount(b *testing.B, n *atomic.Int64, want int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for n.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d runs ended", n.Load(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// benchWorker runs a noop worker with benchInFlight slots on its own connection.
func (f *fixture) benchWorker(b *testing.B) func() { return f.benchWorkerC(b, benchInFlight) }

// benchWorkerC runs a noop worker with c slots on its own connection.
func (f *fixture) benchWorkerC(b *testing.B, c int) func() {
	nc, err := nats.Connect(f.srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	store, err := checkpoint.Open(context.Background(), js, f.names)
	if err != nil {
		b.Fatal(err)
	}
	w, err := New(js, store, Config{Names: f.names, Concurrency: c, Types: []string{"noop"}})
	if err != nil {
		b.Fatal(err)
	}
	w.Handle("noop", func(context.Context, *Step) (any, error) { return nil, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	return func() { cancel(); <-done; nc.Close() }
}
