package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestRetryWithoutProgressWritesNoProgressKey: a node that failed once and then succeeded,
// and never saved progress, leaves nothing under its progress key, not even a delete
// marker (one per retried step would pile up in the runs stream); a node that did save
// progress has it dropped once done.
func TestRetryWithoutProgressWritesNoProgressKey(t *testing.T) {
	t.Parallel()
	f := setup(t, "flaky")
	wf := workflow.New("retried")
	wf.Node("plain", "flaky").WithRetry(workflow.Retry{Initial: workflow.Duration(10 * time.Millisecond), Max: workflow.Duration(50 * time.Millisecond)})
	wf.Node("saver", "flaky").WithRetry(workflow.Retry{Initial: workflow.Duration(10 * time.Millisecond), Max: workflow.Duration(50 * time.Millisecond)})
	f.apply(wf)
	var mu sync.Mutex
	calls := map[string]int{}
	f.worker(Config{}, func(w *Worker) {
		w.Handle("flaky", func(ctx context.Context, s *Step) (any, error) {
			mu.Lock()
			calls[s.Node]++
			n := calls[s.Node]
			mu.Unlock()
			if s.Node == "saver" {
				if err := s.SaveProgress(ctx, map[string]int{"n": n}); err != nil {
					return nil, err
				}
			}
			if n == 1 {
				return nil, fmt.Errorf("flake %d", n)
			}
			return "ok", nil
		})
	})
	id := f.start("retried", `null`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	for _, node := range []string{"plain", "saver"} {
		if st := f.node(id, node); st.Attempts != 2 {
			t.Fatalf("node %s: %d attempts, want 2 (one failure, one success)", node, st.Attempts)
		}
	}
	ctx := context.Background()
	runs, err := f.js.Stream(ctx, "KV_"+f.names.RunsBucket())
	if err != nil {
		t.Fatal(err)
	}
	subject := "$KV." + f.names.RunsBucket() + "." + workflow.ProgressKey(id, "plain")
	if m, err := runs.GetLastMsgForSubject(ctx, subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
		op := ""
		if m != nil {
			op = m.Header.Get("KV-Operation")
		}
		t.Fatalf("a retried node that saved no progress left a message on %s (KV-Operation %q, err %v); want none", subject, op, err)
	}
	if _, err := f.store.KV().Get(ctx, workflow.ProgressKey(id, "saver")); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Fatalf("the progress of a done node was kept: %v", err)
	}
}
