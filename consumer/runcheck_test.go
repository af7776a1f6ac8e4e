package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// A well-formed step of a run that was never started (no run.<id> record), as a producer
// allowed to publish steps could forge: no handler runs, the step goes to the DLQ as an
// unknown run, and nothing is written under the run's keys. A started run beside it runs.
func TestStepOfUnknownRunGoesToTheDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("forged")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	f.apply(wf)
	hash, err := wf.Hash()
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.Add(1); return "ok", nil })
	})
	ctx := context.Background()
	input, err := producer.EncodeNodeInput([]byte(`{"forged":true}`), map[string]json.RawMessage{})
	if err != nil {
		t.Fatal(err)
	}
	const id = "never-started"
	for _, node := range []string{"a", "b"} { // a root, and a node past one
		env := &workflow.Envelope{RunID: id, Workflow: "forged", Def: hash, Node: node, Input: input, Dispatch: workflow.DispatchFirst}
		if _, err := producer.Publish(ctx, f.js, f.names, "work", env); err != nil {
			t.Fatal(err)
		}
	}
	real := f.start("forged", `{}`)
	f.waitEnd(real, 30*time.Second)

	natstest.Eventually(t, 30*time.Second, func() bool {
		entries, err := listDLQ(f)
		return err == nil && len(entries) == 2
	}, "the forged steps never reached the DLQ")
	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.RunID != id || e.Workflow != "forged" || !strings.HasPrefix(e.Reason, "unknown run: run never-started has no record") {
			t.Errorf("DLQ entry %+v: want run %s, workflow forged, reason 'unknown run: …'", e, id)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("handlers ran %d times, want 2 (the started run's a and b only)", n)
	}
	keys, err := f.store.KV().ListKeysFiltered(ctx, "*."+id+".>", "*."+id)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	var left []string
	if keys != nil {
		for k := range keys.Keys() {
			left = append(left, k)
		}
	}
	if len(left) > 0 {
		t.Errorf("the forged steps left keys %v, want none", left)
	}
}
