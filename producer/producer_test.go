package producer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartWithTheSameIDStartsOneRun(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("two-roots")
	wf.Node("a", "noop")
	wf.Node("b", "noop")
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	var started []string
	p := producer.New(js, store, producer.Config{Names: names, OnStart: func(w string) { started = append(started, w) }})
	for range 3 {
		id, err := p.Start(ctx, "two-roots", []byte(` {"k": 1} `), producer.StartOptions{ID: "order-42"})
		if err != nil || id != "order-42" {
			t.Fatalf("start: %q, %v", id, err)
		}
	}
	if _, err := p.Start(ctx, "two-roots", []byte(`{"k": 2}`), producer.StartOptions{ID: "order-42"}); !errors.Is(err, producer.ErrRunExists) {
		t.Fatalf("same ID, other input: %v", err)
	}
	s, _ := js.Stream(ctx, names.StepsStream())
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || len(started) != 1 {
		t.Fatalf("%d steps stored and %d starts counted; want the 2 roots once and 1 start", info.State.Msgs, len(started))
	}
	r, err := store.Run(ctx, "order-42")
	if err != nil || string(r.Input) != `{"k":1}` || r.Workflow != "two-roots" {
		t.Fatalf("run record %+v (%v)", r, err)
	}
	id, err := p.Start(ctx, "two-roots", nil, producer.StartOptions{})
	if err != nil || len(id) != 36 || id[14] != '7' {
		t.Fatalf("generated ID %q is not a UUIDv7 (%v)", id, err)
	}
}
