package main

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestTriggerSession: `workflows apply` of a workflow with `on` creates its consumer on the
// user's stream and says so; a message published there starts run <workflow>-<seq>;
// applying it without `on` removes the consumer; a missing stream is a clear error.
func TestTriggerSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	def := filepath.Join(dir, "intake.yaml")
	writeFile(t, def, "name: intake\non: {stream: ORDERS, subject: orders.new}\nnodes:\n  - {name: take, type: noop, with: {output: taken}}\n")
	if r := e.cli("workflows", "apply", def); r.code != exitFailed || !strings.Contains(r.msg(), "on.stream ORDERS: no such stream") {
		t.Errorf("apply before the stream exists: want exit 1 saying so: %s", r)
	}
	_, js := e.srv.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	r := e.cli("workflows", "apply", def)
	if r.code != 0 || !strings.Contains(r.stderr, "trigger: each message on orders.new of stream ORDERS starts a run (consumer "+e.prefix+"-trigger-intake)") {
		t.Fatalf("apply: %s", r)
	}
	e.worker()
	ack, err := js.Publish(ctx, "orders.new", []byte(`{"order": 7}`))
	if err != nil {
		t.Fatal(err)
	}
	id := "intake-" + strconv.FormatUint(ack.Sequence, 10)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r := e.cli("runs", "get", id, "--json"); r.code == 0 && strings.Contains(r.stdout, `"status": "completed"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s never completed", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	writeFile(t, def, "name: intake\nnodes:\n  - {name: take, type: noop, with: {output: taken}}\n")
	if r := e.cli("workflows", "apply", def); r.code != 0 || !strings.Contains(r.stderr, "trigger on stream ORDERS removed") {
		t.Errorf("apply without on: %s", r)
	}
	if _, err := js.Consumer(ctx, "ORDERS", e.prefix+"-trigger-intake"); err == nil {
		t.Error("the trigger consumer is still there")
	}
}
