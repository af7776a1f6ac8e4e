package consumer_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// A whole workflow in one process: an embedded server, setup, a definition built in Go, a
// worker with a Go handler, and one run.
func Example() {
	dir, _ := os.MkdirTemp("", "jetflow-example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{StoreDir: dir, Port: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	names := workflow.MustNames("jetflow")
	if _, err := setup.Run(ctx, js, setup.Config{Names: names, Types: []setup.ConsumerConfig{{Type: "greet"}}}); err != nil {
		fmt.Println(err)
		return
	}
	store, _ := checkpoint.Open(ctx, js, names)

	// hello → shout: each node is of type "greet", handled in Go below.
	wf := workflow.New("hello")
	wf.Node("hello", "greet")
	wf.Node("shout", "greet", "hello")
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		fmt.Println(err)
		return
	}

	w, _ := consumer.New(js, store, consumer.Config{Names: names})
	w.Handle("greet", func(ctx context.Context, s *consumer.Step) (any, error) {
		var in struct {
			Input struct{ Name string } `json:"input"`
			Nodes map[string]string     `json:"nodes"`
		}
		if err := s.Bind(&in); err != nil {
			return nil, err
		}
		if s.Node == "hello" {
			return "hello, " + in.Input.Name, nil
		}
		return in.Nodes["hello"] + "!", nil
	})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	p := producer.New(js, store, producer.Config{Names: names})
	id, _ := p.Start(ctx, "hello", []byte(`{"name": "ada"}`), producer.StartOptions{ID: "run-1"})
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	end, err := store.WaitEnd(tctx, id)
	if err != nil {
		fmt.Println(err)
		return
	}
	view, _ := store.Describe(ctx, id)
	fmt.Println(id, end.Status, string(view.Nodes["shout"].Output))
	// Output: run-1 completed "hello, ada!"
}
