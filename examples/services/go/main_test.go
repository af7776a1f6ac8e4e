package main

import (
	"encoding/json"
	"testing"

	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestShoutEndToEnd: examples/shout.yaml on a worker, answered by this service.
func TestShoutEndToEnd(t *testing.T) {
	e := exampletest.Start(t, "../../shout.yaml")
	svc, err := Start(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	id, end, st := e.Run(t, `{"text": "hello"}`, "shout")
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("run %s: %s (%s)", id, end.Status, end.Reason)
	}
	var out struct{ Shout, Run string }
	if json.Unmarshal(st.Output, &out) != nil || out.Shout != "HELLO" || out.Run != id {
		t.Errorf("output %s", st.Output)
	}
}
