package nodes_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
	for _, want := range []string{"service svc.bad: error 422: the draft is empty", "service svc.text: the reply is not JSON", "service svc.slow: no reply or heartbeat for 2s", "service svc.nobody: no responders"} {
		if !strings.Contains(all, want) {
			t.Errorf("no DLQ error says %q:\n%s", want, all)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("the ok endpoint was called %d times, want 1", calls.Load())
	}
}

// TestServiceProgress: a service that works longer than with.timeout stays alive by
// publishing heartbeats to the request's Jetflow-Progress subject, may ask for more time with
// Jetflow-More-Time, and saves progress that the next attempt gets back in Jetflow-Resume; a
// service that falls silent for with.timeout is given up on (and the attempt retried).
func TestServiceProgress(t *testing.T) {
	t.Parallel()
	e := newProtectedEnv(t, `name: prog
nodes:
  - name: call
    type: service
    timeout: 1m
    retry: {max_attempts: 2, initial: 50ms, max: 100ms}
    with: {subject: "prog.${{ input.mode }}", timeout: 1s}
`)
	nc, _ := e.srvConn(t)
	svc, err := micro.AddService(nc, micro.Config{Name: "jetflow-progress", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	// pause waits d, false when the test is over.
	pause := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-done:
			return false
		}
	}
	g := svc.AddGroup("prog")
	add := func(name string, h micro.HandlerFunc) {
		if err := g.AddEndpoint(name, h); err != nil {
			t.Fatal(err)
		}
	}
	// beats: 3 s of work in 100 ms steps, a heartbeat after each: three times with.timeout.
	var beatsCalls atomic.Int32
	add("beats", func(r micro.Request) {
		beatsCalls.Add(1)
		to := r.Headers().Get("Jetflow-Progress")
		for range 30 {
			if !pause(100 * time.Millisecond) {
				return
			}
			_ = nc.Publish(to, nil)
		}
		_ = r.RespondJSON("kept alive")
	})
	// more: one heartbeat asking for 5 s, then 2.5 s of silence.
	add("more", func(r micro.Request) {
		m := nats.NewMsg(r.Headers().Get("Jetflow-Progress"))
		m.Header.Set("Jetflow-More-Time", "5s")
		_ = nc.PublishMsg(m)
		if pause(2500 * time.Millisecond) {
			_ = r.RespondJSON("given more time")
		}
	})
	// resume: the first attempt saves {"page": 7} and fails; the second answers with what
	// Jetflow-Resume gave it.
	var resumeCalls atomic.Int32
	add("resume", func(r micro.Request) {
		if resumeCalls.Add(1) == 1 {
			_ = nc.Publish(r.Headers().Get("Jetflow-Progress"), []byte(`{"page": 7}`))
			_ = nc.Flush()
			pause(300 * time.Millisecond) // the worker saves it before the error reply
			_ = r.Error("503", "lost the connection to the model", nil)
			return
		}
		_ = r.RespondJSON(map[string]string{"resumed_from": r.Headers().Get("Jetflow-Resume")})
	})
	// odd: the first attempt's heartbeats are all odd — a Jetflow-More-Time that is not a
	// duration (the window stays 1 s), a JSON body over 32 KiB and one that is not JSON
	// (neither saved) — then it never replies; the second answers with what it was resumed from.
	var oddCalls atomic.Int32
	add("odd", func(r micro.Request) {
		if oddCalls.Add(1) == 1 {
			to := r.Headers().Get("Jetflow-Progress")
			m := nats.NewMsg(to)
			m.Header.Set("Jetflow-More-Time", "banana")
			m.Data = []byte(`{"big": "` + strings.Repeat("x", 40<<10) + `"}`)
			_ = nc.PublishMsg(m)
			_ = nc.Publish(to, []byte("page 3 of 9"))
			return // and never replies

		}
		_ = r.RespondJSON(map[string]string{"resumed_from": r.Headers().Get("Jetflow-Resume")})
	})
	// silent: nothing for 10 s.
	add("silent", func(r micro.Request) {
		if pause(10 * time.Second) {
			_ = r.RespondJSON("too late")
		}
	})

	for _, tc := range []struct {
		mode, status, output, lastError string
		attempts                        int
	}{
		{"beats", checkpoint.EndCompleted, `"kept alive"`, "", 1},
		{"more", checkpoint.EndCompleted, `"given more time"`, "", 1},
		{"resume", checkpoint.EndCompleted, `{"resumed_from":"{\"page\":7}"}`, "", 2},
		{"odd", checkpoint.EndCompleted, `{"resumed_from":""}`, "", 2},
		{"silent", checkpoint.EndFailed, "", "service prog.silent: no reply or heartbeat for 1s", 2},
	} {
		id := e.start(t, "prog", map[string]string{"mode": tc.mode})
		end := e.wait(t, id, 60*time.Second)
		st, _, _ := e.store.Node(context.Background(), id, "call")
		if end.Status != tc.status {
			t.Errorf("%s: ended %s (%s; %s), want %s", tc.mode, end.Status, end.Reason, st.LastError, tc.status)
			continue
		}
		if tc.output != "" && string(st.Output) != tc.output {
			t.Errorf("%s: output %s, want %s", tc.mode, st.Output, tc.output)
		}
		if tc.lastError != "" && !strings.Contains(st.LastError, tc.lastError) {
			t.Errorf("%s: last error %q, want %q", tc.mode, st.LastError, tc.lastError)
		}
		if st.Attempts != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.mode, st.Attempts, tc.attempts)
		}
	}
	if n := beatsCalls.Load(); n != 1 {
		t.Errorf("the heartbeating service was called %d times, want 1", n)
	}
	if n := resumeCalls.Load(); n != 2 {
		t.Errorf("the resuming service was called %d times, want 2", n)
	}
}
