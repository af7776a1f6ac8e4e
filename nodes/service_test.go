package nodes_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
)

// TestServiceNode: a real NATS micro service answers a service node; the request carries
// the node input and jetflow's headers; each error class maps as DESIGN.md says.
func TestServiceNode(t *testing.T) {
	t.Parallel()
	e := newProtectedEnv(t, `name: svc
nodes:
  - name: call
    type: service
    retry: {max_attempts: 3, initial: 50ms, max: 100ms}
    with: {subject: "svc.${{ input.mode }}", timeout: 2s}
`)
	nc, _ := e.srvConn(t)
	var calls atomic.Int32
	var seen atomic.Pointer[micro.Request]
	svc, err := micro.AddService(nc, micro.Config{Name: "jetflow-test", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	g := svc.AddGroup("svc")
	add := func(name string, h micro.HandlerFunc) {
		if err := g.AddEndpoint(name, h); err != nil {
			t.Fatal(err)
		}
	}
	add("ok", func(r micro.Request) {
		calls.Add(1)
		seen.Store(&r)
		var in struct {
			Input struct{ Mode string } `json:"input"`
		}
		_ = json.Unmarshal(r.Data(), &in)
		_ = r.RespondJSON(map[string]any{"mode": in.Input.Mode, "attempt": r.Headers().Get("Jetflow-Attempt")})
	})
	add("bad", func(r micro.Request) { _ = r.Error("422", "the draft is empty", nil) })
	var flaky atomic.Int32
	add("flaky", func(r micro.Request) {
		if flaky.Add(1) < 3 {
			_ = r.Error("503", "warming up", nil)
			return
		}
		_ = r.RespondJSON("warm")
	})
	var limited atomic.Int32
	add("limited", func(r micro.Request) {
		if limited.Add(1) == 1 {
			_ = r.Error("429", "slow down", nil, micro.WithHeaders(micro.Headers{"Retry-After": []string{"1"}}))
			return
		}
		_ = r.RespondJSON("after the cool-down")
	})
	add("text", func(r micro.Request) { _ = r.Respond([]byte("hello, not JSON")) })
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	add("slow", func(r micro.Request) {
		select {
		case <-time.After(5 * time.Second):
			_ = r.RespondJSON("late")
		case <-done:
		}
	})

	run := func(mode string) (string, *checkpoint.End) {
		id := e.start(t, "svc", map[string]string{"mode": mode})
		return id, e.wait(t, id, 60*time.Second)
	}
	id, end := run("ok")
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("ok: %s (%s)", end.Status, end.Reason)
	}
	st, _, _ := e.store.Node(context.Background(), id, "call")
	if string(st.Output) != `{"attempt":"1","mode":"ok"}` {
		t.Errorf("output %s", st.Output)
	}
	if r := seen.Load(); r == nil || (*r).Headers().Get("Jetflow-Run") != id || (*r).Headers().Get("Jetflow-Node") != "call" ||
		(*r).Headers().Get("Idempotency-Key") != id+".call" {
		t.Errorf("the request's headers: %v", (*r).Headers())
	}
	for _, tc := range []struct {
		mode, status, reason string
	}{
		{"bad", checkpoint.EndFailed, "permanent error"},
		{"text", checkpoint.EndFailed, "permanent error"},
		{"flaky", checkpoint.EndCompleted, ""},
		{"limited", checkpoint.EndCompleted, ""},
		{"slow", checkpoint.EndFailed, "attempts exhausted"},
		{"nobody", checkpoint.EndFailed, "attempts exhausted"},
	} {
		id, end := run(tc.mode)
		if end.Status != tc.status || !strings.Contains(end.Reason, tc.reason) {
			st, _, _ := e.store.Node(context.Background(), id, "call")
			t.Errorf("%s: ended %s (%s; %s), want %s %q", tc.mode, end.Status, end.Reason, st.LastError, tc.status, tc.reason)
		}
	}
	entries, _ := dlq.List(context.Background(), e.js, e.names, dlq.Filter{Workflow: "svc"})
	var errs []string
	for _, en := range entries {
		errs = append(errs, en.Error)
	}
	all := strings.Join(errs, "\n")
	for _, want := range []string{"service svc.bad: error 422: the draft is empty", "service svc.text: the reply is not JSON", "service svc.slow: no reply within", "service svc.nobody: no responders"} {
		if !strings.Contains(all, want) {
			t.Errorf("no DLQ error says %q:\n%s", want, all)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("the ok endpoint was called %d times, want 1", calls.Load())
	}
}
