package dlq_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Moving failed steps to the DLQ, then listing and counting what it holds. A worker does the
// moving; an operator lists, shows, replays and purges.
func Example() {
	dir, _ := os.MkdirTemp("", "jetflow-dlq-example")
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
	if _, err := jsetup.Run(ctx, js, jsetup.Config{Names: names}); err != nil {
		fmt.Println(err)
		return
	}

	for i, run := range []string{"run-1", "run-2", "run-3"} {
		reason := "permanent error"
		if i == 2 {
			reason = "attempts exhausted (3 of 3)"
		}
		// A DLQ entry keeps the failed step's message body: its envelope.
		env := &workflow.Envelope{RunID: run, Workflow: "pay", Def: strings.Repeat("0", 64), Node: "charge"}
		body, _ := env.Encode()
		_, err := dlq.Publish(ctx, js, names, body, dlq.Failure{
			Workflow: "pay", Node: "charge", RunID: run, Reason: reason,
			Error: "card declined", Attempts: 1, StreamSeq: uint64(i + 1),
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	entries, _ := dlq.List(ctx, js, names, dlq.Filter{Workflow: "pay"})
	for _, e := range entries {
		fmt.Println(e.ID, e.RunID, e.Reason)
	}
	for _, g := range dlq.Group(entries) {
		fmt.Printf("%d × %s/%s: %s\n", g.Count, g.Workflow, g.Node, g.Reason)
	}
	n, _ := dlq.Purge(ctx, js, names, dlq.Filter{Reason: "exhausted"})
	fmt.Println("purged", n)
	// Output:
	// 1 run-1 permanent error
	// 2 run-2 permanent error
	// 3 run-3 attempts exhausted (3 of 3)
	// 2 × pay/charge: permanent error
	// 1 × pay/charge: attempts exhausted (3 of 3)
	// purged 1
}
