package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

const slowWorkflow = `name: slow
nodes:
  - name: a
    type: exec
    with: {command: "sleep 0.3; echo '{\"a\": 1}'"}
  - name: b
    type: exec
    needs: [a]
    with: {command: "sleep 0.3; echo '{\"b\": 1}'"}
`

// TestSIGTERMDrainsAndHandsBack: a worker told to stop under load exits 0 within its grace
// period, finishing what runs and handing back what it prefetched; another worker picks the
// rest up at once. The consumer's ack wait is 5 minutes here, so a step that was not handed
// back could not finish within the test's deadline.
func TestSIGTERMDrainsAndHandsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if r := e.cli("setup", "--type", "exec", "--ack-wait", "5m"); r.code != 0 {
		t.Fatalf("setup: %s", r)
	}
	def := filepath.Join(t.TempDir(), "slow.yaml")
	if err := os.WriteFile(def, []byte(slowWorkflow), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.cli("workflows", "apply", def); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	var ids []string
	for i := range 24 {
		r := e.cli("start", "slow", "--input", fmt.Sprintf(`{"i":%d}`, i))
		if r.code != 0 {
			t.Fatalf("start: %s", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "w1.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	w1 := exec.Command(jetflowBin, "worker", "--nats", e.url, "--prefix", e.prefix, "--concurrency", "4", "--drain-timeout", "10s")
	w1.Stdout, w1.Stderr = logf, logf
	if err := w1.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w1.Process.Kill(); _ = w1.Wait() })
	// Let it get busy, then stop it.
	natstest.Eventually(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(logf.Name())
		return strings.Contains(string(b), "worker started")
	}, "worker 1 did not start")
	// Stop it once it is busy: some steps done, some running, some prefetched.
	natstest.Eventually(t, 30*time.Second, func() bool {
		r := e.cli("runs", "get", ids[0], "--json")
		var v struct {
			Nodes map[string]struct{ Status string }
		}
		_ = json.Unmarshal([]byte(r.stdout), &v)
		return v.Nodes["a"].Status == "done"
	}, "worker 1 finished no step")
	if err := w1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w1.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("worker 1 exited %v after SIGTERM, want 0; log:\n%s", err, b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker 1 did not exit within 30 s of SIGTERM (drain timeout 10 s)")
	}
	w2 := startProcWorker(t, e, "worker2")
	_ = w2
	for _, id := range ids {
		natstest.Eventually(t, 90*time.Second, func() bool {
			r := e.cli("runs", "get", id, "--json")
			var v struct{ Status string }
			_ = json.Unmarshal([]byte(r.stdout), &v)
			return v.Status == "completed"
		}, "run %s did not complete after worker 1 stopped: a step it held was not handed back", id)
	}
}
