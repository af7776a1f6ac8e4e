package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// poisonWorkflow's only node kills the worker that runs it (SIGKILL to its parent).
const poisonWorkflow = `name: poison
nodes:
  - name: kill-worker
    type: exec
    with:
      command: kill -9 $PPID; sleep 5
`

// healthyWorkflow is a short chain of exec nodes.
const healthyWorkflow = `name: healthy
nodes:
  - name: one
    type: exec
    with: {command: "echo '{\"one\": 1}'"}
  - name: two
    type: exec
    needs: [one]
    with: {command: "echo '{\"two\": 2}'"}
`

// TestPoisonStepEndsInDLQ: a step that kills every worker that runs it lands in the DLQ with
// the crash reason after a few deliveries (workers restarted by the test), and a healthy run
// started at the same time completes.
func TestPoisonStepEndsInDLQ(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if r := e.cli("setup", "--type", "exec", "--ack-wait", "2s"); r.code != 0 {
		t.Fatalf("setup: %s", r)
	}
	dir := t.TempDir()
	for name, def := range map[string]string{"poison.yaml": poisonWorkflow, "healthy.yaml": healthyWorkflow} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(def), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.cli("workflows", "apply", dir); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	poison := strings.TrimSpace(e.cli("start", "poison").stdout)
	healthy := strings.TrimSpace(e.cli("start", "healthy").stdout)
	if poison == "" || healthy == "" {
		t.Fatal("start printed no run ID")
	}

	// Keep a worker alive: start a new one each time the poison kills the last.
	deadline := time.Now().Add(90 * time.Second)
	restarts := 0
	var status map[string]any
	for {
		w := startProcWorker(t, e, fmt.Sprintf("worker%d", restarts))
		for {
			r := e.cli("runs", "get", poison, "--json")
			status = nil
			_ = json.Unmarshal([]byte(r.stdout), &status)
			if status["status"] != "running" && status["status"] != nil { // nil: not recorded yet
				break
			}
			select {
			case <-w.done:
			case <-time.After(100 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatalf("the poison run is still running after %d worker restarts", restarts)
				}
				continue
			}
			break
		}
		if status["status"] != "running" && status["status"] != nil {
			break
		}
		restarts++
	}
	if status["status"] != "failed" {
		t.Fatalf("poison run ended %v, want failed", status["status"])
	}
	r := e.cli("dlq", "ls", "--json")
	var entries []struct {
		RunID  string `json:"run_id"`
		Node   string `json:"node"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("dlq ls --json: %v: %s", err, r)
	}
	if len(entries) != 1 || entries[0].RunID != poison || !strings.HasPrefix(entries[0].Reason, "worker crashed or timed out") {
		t.Fatalf("DLQ entries %+v: want one crash entry for run %s", entries, poison)
	}
	t.Logf("poison step reached the DLQ after %d worker restarts: %s", restarts, entries[0].Reason)
	r = e.cli("start", "healthy", "--id", healthy, "--wait", "--timeout", "60s")
	if r.code != 0 || !strings.Contains(r.stdout, "completed") {
		t.Fatalf("healthy run: %s", r)
	}
}
