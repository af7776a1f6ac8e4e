// Package exampletest runs one of examples/*.yaml on a real jetflow worker, for the tests of
// the example services: a NATS server, setup, the workflow applied, a worker with the
// built-in node types, and Run to start a run and wait for its end.
package exampletest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Env is a server with one workflow applied and a worker running it.
type Env struct {
	// Server is the NATS server.
	Server *natstest.Server
	// Conn is a connection to it, for a service under test.
	Conn  *nats.Conn
	store *checkpoint.Store
	prod  *producer.Producer
	name  string
}

// Start sets up a server, applies the workflow in file and starts a worker with the
// built-in node types; everything stops when the test ends.
func Start(t *testing.T, file string) *Env {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 5*time.Second)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse(file, data, workflow.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	w, err := consumer.New(js, store, consumer.Config{Names: names})
	if err != nil {
		t.Fatal(err)
	}
	nodes.Register(w)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Logf("worker: %v", err)
		}
	})
	return &Env{Server: srv, Conn: nc, store: store, prod: producer.New(js, store, producer.Config{Names: names}), name: wf.Name}
}

// Run starts a run of the workflow with input and waits up to a minute for its end; it
// returns the run's ID, its end and the state of node.
func (e *Env) Run(t *testing.T, input, node string) (string, *checkpoint.End, *checkpoint.Node) {
	t.Helper()
	ctx := context.Background()
	id, err := e.prod.Start(ctx, e.name, []byte(input), producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	end, err := e.store.WaitEnd(wait, id)
	if err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	st, _, err := e.store.Node(ctx, id, node)
	if err != nil {
		t.Fatalf("run %s: node %s: %v", id, node, err)
	}
	return id, end, st
}
