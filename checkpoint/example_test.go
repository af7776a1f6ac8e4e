package checkpoint_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Listing runs, cancelling one, and reaping finished runs after their retention.
func Example() {
	dir, _ := os.MkdirTemp("", "jetflow-checkpoint-example")
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
	store, _ := checkpoint.Open(ctx, js, names)

	// Two runs (a producer records them when it starts runs).
	now := time.Now().UTC()
	for i, id := range []string{"order-1", "order-2"} {
		_ = store.CreateRun(ctx, &checkpoint.Run{ID: id, Workflow: "orders", Created: now.Add(time.Duration(i) * time.Second)})
	}
	// Cancel one: workers cancel its running handlers and skip its queued steps.
	cancelled, _ := store.Cancel(ctx, "order-1", "customer changed their mind")
	again, _ := store.Cancel(ctx, "order-1", "")
	fmt.Println("cancelled:", cancelled, "again:", again)

	runs, _ := store.ListRuns(ctx, checkpoint.RunFilter{Workflow: "orders"})
	for _, r := range runs {
		fmt.Printf("%s %s %q\n", r.ID, r.Status, r.Reason)
	}

	// A week and a day later, the reaper purges the cancelled run; the running one stays.
	reaper := checkpoint.NewReaper(js, store, names, checkpoint.ReaperConfig{
		Clock: func() time.Time { return now.Add(8 * 24 * time.Hour) },
	})
	purged, _ := reaper.Sweep(ctx)
	runs, _ = store.ListRuns(ctx, checkpoint.RunFilter{})
	fmt.Println("purged", purged, "left", len(runs), runs[0].ID)
	// Output:
	// cancelled: true again: false
	// order-2 running ""
	// order-1 cancelled "customer changed their mind"
	// purged 1 left 1 order-2
}
