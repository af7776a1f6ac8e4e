package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSignalSession is the README's approval session: a run of examples/approval.yaml waits
// at approve (runs get says so), `runs signal` with --data completes it with the data as
// approve's output; a second signal, a signal to an unknown run and a signal nothing waits
// for are exit 1; bad --data is exit 2.
func TestSignalSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	e.worker()
	r := e.cli("start", "approval", "--input", `{"topic": "release 1.2"}`)
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := getRun(t, e, id)
		if n := v.Nodes["approve"]; n != nil && n.Status == "waiting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("approve never waited: %+v", v.Nodes["approve"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if human := e.cli("runs", "get", id); !strings.Contains(human.stdout, "waiting (signal approve)") {
		t.Errorf("runs get should show the node waiting for its signal:\n%s", human.stdout)
	}
	if r := e.cli("runs", "signal", id, "approve", "--data", "{nope"); r.code != exitUsage {
		t.Errorf("bad --data: want exit 2: %s", r)
	}
	if r := e.cli("runs", "signal", id, "reject"); r.code != exitFailed || !strings.Contains(r.msg(), "no wait node of the run waits for this signal") {
		t.Errorf("a signal nothing waits for: want exit 1 saying so: %s", r)
	}
	r = e.cli("runs", "signal", id, "approve", "--data", `{"by": "ada"}`)
	if r.code != 0 || !strings.Contains(r.stdout, "signal approve sent to run "+id) {
		t.Fatalf("runs signal: %s", r)
	}
	if r := e.cli("runs", "signal", id, "approve"); r.code != exitFailed || !strings.Contains(r.msg(), "already signalled") &&
		!strings.Contains(r.msg(), "the run has ended") {
		t.Errorf("a second signal: want exit 1, already signalled (or ended): %s", r)
	}
	if r := e.cli("runs", "signal", "no-such-run", "approve"); r.code != exitFailed || !strings.Contains(r.msg(), `no run "no-such-run"`) {
		t.Errorf("a signal to an unknown run: want exit 1: %s", r)
	}
	r = e.cli("runs", "watch", id)
	if r.code != 0 {
		t.Fatalf("watch: %s", r)
	}
	v := getRun(t, e, id)
	var out struct {
		By string `json:"by"`
	}
	if json.Unmarshal(v.Nodes["approve"].Output, &out) != nil || out.By != "ada" || v.Status != "completed" {
		t.Errorf("run %s, approve's output %s: want completed with the signal's data", v.Status, v.Nodes["approve"].Output)
	}
}
