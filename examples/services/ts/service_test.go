package ts_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/exampletest"
)

// need skips the test when what it needs is missing, except in CI (CI=true), where it fails:
// CI has node, and .ci/run installs the npm packages first.
func need(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: this test must run in CI)", what)
	}
	t.Skip(what)
}

// startNode runs service.js with node against url and waits for its ready line.
func startNode(t *testing.T, url string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "node is not on the PATH")
	}
	if _, err := os.Stat("node_modules/@nats-io/services"); err != nil {
		need(t, "the npm packages are not installed: run npm ci in examples/services/ts")
	}
	cmd := exec.Command(node, "service.js")
	cmd.Env = append(os.Environ(), "NATS_URL="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ready := make(chan bool, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "answering on svc.shout") {
				said = true
				ready <- true
			}
		}
		_ = cmd.Wait()
		if !said {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("node service.js exited before it was ready (its stderr is above)")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("node service.js did not say it was ready within 60 s")
	}
}

// TestTypeScriptService: examples/shout.yaml on a jetflow worker, its service node answered
// by service.js under node; a bad input is a 400, so the run fails at once, to the DLQ.
func TestTypeScriptService(t *testing.T) {
	e := exampletest.Start(t, "../../shout.yaml")
	startNode(t, e.Server.ClientURL())

	id, end, st := e.Run(t, `{"text": "hello from node"}`, "shout")
	if end.Status != checkpoint.EndCompleted {
		t.Fatalf("run %s: %s (%s)", id, end.Status, end.Reason)
	}
	var out struct{ Shout, Run, By string }
	if json.Unmarshal(st.Output, &out) != nil || out.Shout != "HELLO FROM NODE" || out.Run != id || out.By != "typescript" {
		t.Errorf("output %s", st.Output)
	}

	id, end, st = e.Run(t, `{"nothing": true}`, "shout")
	if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "permanent error") ||
		!strings.Contains(st.LastError, "service svc.shout: error 400: input.text is missing") || st.Attempts != 1 {
		t.Errorf("run %s without text: %s (%s), %d attempts, last error %q", id, end.Status, end.Reason, st.Attempts, st.LastError)
	}
}
