package main

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestShoutEndToEnd: examples/shout.yaml on a worker, answered by this service.
func TestShoutEndToEnd(t *testing.T) {
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 5*time.Second)
	nc, js := srv.Connect(t)
	svc, err := Start(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../shout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse("shout.yaml", data, workflow.ValidateOptions{})
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
	t.Cleanup(func() { stop(); <-done })
	id, err := producer.New(js, store, producer.Config{Names: names}).Start(ctx, "shout", []byte(`{"text": "hello"}`), producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	end, err := store.WaitEnd(wait, id)
	if err != nil || end.Status != checkpoint.EndCompleted {
		t.Fatalf("run %s: %v %+v", id, err, end)
	}
	st, _, _ := store.Node(ctx, id, "shout")
	var out struct{ Shout, Run string }
	if json.Unmarshal(st.Output, &out) != nil || out.Shout != "HELLO" || out.Run != id {
		t.Errorf("output %s", st.Output)
	}
}
