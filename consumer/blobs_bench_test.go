package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// BenchmarkPayload measures what a document costs on its way through a linear 3-node
// workflow whose nodes each pass their parent's output on (the first, the run input): one op
// is one run, started and waited for, one at a time. 1 KiB and 128 KiB travel inline; 1 MiB and
// 10 MiB travel as blobs (the input stored by the producer, each output by the worker, every
// read checked against its SHA-256). MB/s counts the document once per run.
// Run: go test ./consumer -run '^$' -bench Payload -benchtime 10x
func BenchmarkPayload(b *testing.B) {
	for _, size := range []int{1 << 10, 128 << 10, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			f := setupB(b)
			wf := workflow.New("relay")
			wf.Node("a", "relay")
			wf.Node("b", "relay", "a")
			wf.Node("c", "relay", "b")
			ctx := context.Background()
			if _, _, err := f.store.ApplyWorkflow(ctx, wf); err != nil {
				b.Fatal(err)
			}
			w, err := New(f.js, f.store, Config{Names: f.names})
			if err != nil {
				b.Fatal(err)
			}
			w.Handle("relay", func(ctx context.Context, s *Step) (any, error) {
				var in producer.NodeInput
				if err := json.Unmarshal(s.Input, &in); err != nil {
					return nil, Permanent(err)
				}
				for _, v := range in.Nodes {
					return v, nil
				}
				return in.Input, nil
			})
			wctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(wctx) }()
			defer func() { cancel(); <-done }()
			doc := bigDoc(size)
			b.SetBytes(int64(len(doc)))
			for i := range b.N + 1 {
				if i == 1 {
					b.ResetTimer() // the first run waited for the worker to start
				}
				id, err := f.prod.Start(ctx, "relay", doc, producer.StartOptions{})
				if err != nil {
					b.Fatal(err)
				}
				tctx, tcancel := context.WithTimeout(ctx, time.Minute)
				end, err := f.store.WaitEnd(tctx, id)
				tcancel()
				if err != nil || end.Status != checkpoint.EndCompleted {
					b.Fatalf("run %s: %+v, %v", id, end, err)
				}
			}
			b.StopTimer() // not the worker's shutdown
		})
	}
}
