package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// crashWorkflow is a → b → c, three exec nodes that each append "<node> <attempt> <pid>
// <ppid>" to $LEDGER; $PPID is the worker process that ran the step. b blocks on its first
// run only (the first run creates $MARKER), so a worker can be killed in the middle of it.
const crashWorkflow = `name: crash
nodes:
  - name: a
    type: exec
    with:
      env: {LEDGER: %[1]q}
      command: |
        echo "a $JETFLOW_ATTEMPT $$ $PPID" >> "$LEDGER"
        echo '{"a": 1}'
  - name: b
    type: exec
    needs: [a]
    with:
      env: {LEDGER: %[1]q, MARKER: %[2]q}
      command: |
        if [ -e "$MARKER" ]; then first=0; else : > "$MARKER"; first=1; fi
        echo "b $JETFLOW_ATTEMPT $$ $PPID" >> "$LEDGER"
        if [ "$first" = 1 ]; then sleep 30; fi
        echo '{"b": 1}'
  - name: c
    type: exec
    needs: [b]
    with:
      env: {LEDGER: %[1]q}
      command: |
        echo "c $JETFLOW_ATTEMPT $$ $PPID" >> "$LEDGER"
        echo '{"c": 1}'
`

// ledgerLine is one handler run, as the crash workflow records it.
type ledgerLine struct {
	node, attempt string
	pid, ppid     int
}

func readLedger(t testing.TB, path string) []ledgerLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var out []ledgerLine
	for _, l := range lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("ledger line %q: want 4 fields", l)
		}
		pid, err1 := strconv.Atoi(f[2])
		ppid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			t.Fatalf("ledger line %q: bad pids", l)
		}
		out = append(out, ledgerLine{node: f[0], attempt: f[1], pid: pid, ppid: ppid})
	}
	return out
}

// runsOf returns the ledger lines of node.
func runsOf(ledger []ledgerLine, node string) []ledgerLine {
	var out []ledgerLine
	for _, l := range ledger {
		if l.node == node {
			out = append(out, l)
		}
	}
	return out
}

// procWorker is `jetflow worker` running as a subprocess of the test.
type procWorker struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once Wait returned
	err  error         // Wait's error, once done is closed
}

// startProcWorker starts the real binary as a worker; t.Cleanup stops it (SIGTERM, then
// SIGKILL after 30 s) if the test has not.
func startProcWorker(t *testing.T, e *testEnv, name string) *procWorker {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(jetflowBin, "worker", "--nats", e.url, "--prefix", e.prefix, "--drain-timeout", "1s", "-v")
	cmd.Env = append(os.Environ(), "NATS_URL=", "JETFLOW_PREFIX=")
	// A file, not a pipe: no copying goroutines, and nothing for an orphaned grandchild to
	// hold open.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &procWorker{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Errorf("worker %s (pid %d) did not stop on SIGTERM within 30 s; killing it", name, cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-w.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("worker %s (pid %d) log:\n%s", name, cmd.Process.Pid, b)
		}
	})
	return w
}

// kill SIGKILLs the worker and waits for it to die.
func (w *procWorker) kill(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill worker: %v", err)
	}
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("worker pid %d did not die within 30 s of SIGKILL", w.cmd.Process.Pid)
	}
	var ee *exec.ExitError
	if !errors.As(w.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("worker should have died of SIGKILL, got %v", w.err)
	}
}

// TestCrashMidStep kills a worker (SIGKILL, the real binary) while it runs the middle step
// of a → b → c, starts another, and checks from the broker and a ledger the steps keep
// that the run completes with a and c run once and b run twice: once killed, once finished.
func TestCrashMidStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The built-in exec consumer waits 30 s for an ack by default: make the killed step come
	// back within 2 s.
	if r := e.cli("setup", "--type", "exec", "--ack-wait", "2s"); r.code != 0 {
		t.Fatalf("setup --type exec --ack-wait 2s: %s", r)
	}

	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger")
	marker := filepath.Join(dir, "b-started")
	def := filepath.Join(dir, "crash.yaml")
	if err := os.WriteFile(def, fmt.Appendf(nil, crashWorkflow, ledger, marker), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.cli("workflows", "apply", def); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	// The first run of b outlives its worker (it is in a process group of its own): kill
	// its group when the test ends.
	t.Cleanup(func() {
		for _, l := range runsOf(readLedger(t, ledger), "b") {
			_ = syscall.Kill(-l.pid, syscall.SIGKILL)
		}
	})

	w1 := startProcWorker(t, e, "worker1")
	r := e.cli("start", "crash", "--input", `{"k": "v"}`)
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)

	natstest.Eventually(t, 60*time.Second, func() bool {
		return len(runsOf(readLedger(t, ledger), "b")) > 0
	}, "step b did not start on worker 1")
	w1.kill(t)
	killed := runsOf(readLedger(t, ledger), "b")[0]
	if killed.ppid != w1.cmd.Process.Pid {
		t.Fatalf("b's first run has parent %d, want worker 1 (%d)", killed.ppid, w1.cmd.Process.Pid)
	}
	if syscall.Kill(killed.pid, 0) == nil {
		t.Logf("note: b's first run (pid %d) outlived its SIGKILLed worker: exec nodes are not tied to the worker's life", killed.pid)
	}

	w2 := startProcWorker(t, e, "worker2")

	// Wait for the run's end on the broker (a KV watch, bounded).
	_, js := e.srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := checkpoint.Open(ctx, js, workflow.MustNames(e.prefix))
	if err != nil {
		t.Fatal(err)
	}
	end, err := store.WaitEnd(ctx, id)
	if err != nil {
		t.Fatalf("run %s did not end within 60 s of worker 2 starting: %v; ledger: %+v", id, err, readLedger(t, ledger))
	}
	if end.Status != checkpoint.EndCompleted {
		t.Errorf("run ended %s (%s), want completed", end.Status, end.Reason)
	}

	v := getRun(t, e, id)
	if v.Status != "completed" {
		t.Errorf("runs get: status %s, want completed", v.Status)
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := v.Nodes[name]; n == nil || n.Status != "done" {
			t.Errorf("node %s: %s", name, mustJSON(n))
		}
	}
	// A crash is not an attempt that ended in an error: b's recorded attempts stay 1.
	if n := v.Nodes["b"]; n != nil && n.Attempts != 1 {
		t.Errorf("node b: attempts %d, want 1 (the crash is counted in crashes, not attempts)", n.Attempts)
	}

	l := readLedger(t, ledger)
	t.Logf("ledger: %+v (worker 1 pid %d, worker 2 pid %d)", l, w1.cmd.Process.Pid, w2.cmd.Process.Pid)
	a, b, c := runsOf(l, "a"), runsOf(l, "b"), runsOf(l, "c")
	if len(a) != 1 || a[0].ppid != w1.cmd.Process.Pid {
		t.Errorf("a should run exactly once, on worker 1: %+v", a)
	}
	if len(b) != 2 || b[0].ppid != w1.cmd.Process.Pid || b[1].ppid != w2.cmd.Process.Pid {
		t.Errorf("b should run twice, killed on worker 1, then finished on worker 2: %+v", b)
	}
	for _, r := range b {
		if r.attempt != "1" {
			t.Errorf("b ran with JETFLOW_ATTEMPT=%s, want 1 both times (a crash does not spend an attempt)", r.attempt)
		}
	}
	if len(c) != 1 || c[0].ppid != w2.cmd.Process.Pid {
		t.Errorf("c should run exactly once, on worker 2: %+v", c)
	}
	if len(l) != 4 {
		t.Errorf("want 4 handler runs in all, got %d: %+v", len(l), l)
	}

	// Worker 2 drains and exits 0 on SIGTERM.
	_ = w2.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w2.done:
		if w2.err != nil {
			t.Errorf("worker 2 on SIGTERM: %v", w2.err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("worker 2 did not stop within 30 s of SIGTERM")
	}
}
