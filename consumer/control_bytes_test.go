package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// mapKVBytes runs one for_each node over n items (max_parallel 50) and returns the bytes
// written to the runs bucket per item (every KV write of the run seen on the bucket's
// subjects: node and item states, joins, the end), and the messages per item.
func mapKVBytes(t *testing.T, n int) (bytesPerItem, writesPerItem float64) {
	f := setup(t, "work")
	wf := workflow.New(fmt.Sprintf("bytes%d", n))
	m := wf.Node("each", "work")
	m.ForEach = "${{ input.items }}"
	m.MaxParallel = 50
	f.apply(wf)
	f.worker(Config{Concurrency: 64}, func(w *Worker) {
		w.Handle("work", func(_ context.Context, s *Step) (any, error) { return s.Index, nil })
	})
	nc, err := nats.Connect(f.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var bytes, msgs atomic.Int64
	sub, err := nc.Subscribe("$KV."+f.names.RunsBucket()+".>", func(m *nats.Msg) {
		bytes.Add(int64(len(m.Data) + len(m.Subject)))
		msgs.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	in, _ := json.Marshal(map[string]any{"items": items})
	id := f.start(wf.Name, string(in))
	if end := f.waitEnd(id, 120*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	_ = nc.Flush()
	return float64(bytes.Load()) / float64(n), float64(msgs.Load()) / float64(n)
}

// The items' bookkeeping is not one growing value: the KV bytes written per item stay the
// same whether the node has 500 items or 4,000 (a set of every item rewritten on each finish
// would write eight times as much per item at 4,000).
func TestForEachKVBytesPerItemDoNotGrow(t *testing.T) {
	t.Parallel()
	small, _ := mapKVBytes(t, 500)
	large, writes := mapKVBytes(t, 4000)
	t.Logf("KV bytes written per item: %.0f at 500 items, %.0f at 4,000 (%.2f writes per item)", small, large, writes)
	if large > 1.5*small {
		t.Fatalf("KV bytes per item grew from %.0f (500 items) to %.0f (4,000 items): the bookkeeping grows with the list", small, large)
	}
}
