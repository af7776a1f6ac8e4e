package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/metrics"
)

// runTop runs `jetflow top ARGS` against e and returns its output.
func (e *obsEnv) runTop(ctx context.Context, args ...string) (string, error) {
	e.t.Helper()
	var out bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &out, natsURL: e.srv.ClientURL(), prefix: e.c.names.Prefix()}
	cmd := a.topCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestTopOnce prints one snapshot after known runs, as text and as JSON.
func TestTopOnce(t *testing.T) {
	t.Parallel()
	e := newObsEnv(t, httpFlags{})
	ok, failed := e.start("diamond"), e.start("broken")
	e.waitEnd(ok, checkpoint.EndCompleted)
	e.waitEnd(failed, checkpoint.EndFailed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	out, err := e.runTop(ctx, "--once")
	if err != nil {
		t.Fatalf("top --once: %v\n%s", err, out)
	}
	for _, want := range []string{"THROUGHPUT", "steps/s finished", "LATENCY", "p50", "IN FLIGHT", "on 1 worker", "DLQ", "1 entry",
		"TYPE", "exec", "noop", "BREAKERS  all closed"} {
		if !strings.Contains(out, want) {
			t.Errorf("top --once lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("top --once draws with ANSI escapes:\n%q", out)
	}

	out, err = e.runTop(ctx, "--once", "--json")
	if err != nil {
		t.Fatalf("top --once --json: %v\n%s", err, out)
	}
	var o metrics.Overview
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("top --once --json: %v\n%s", err, out)
	}
	// diamond: 4 nodes done; broken: authenticate dead.
	if o.DLQDepth != 1 || len(o.Workers) != 1 || o.Activity.Succeeded < 4 || o.Activity.Failed < 1 || o.Activity.P50 <= 0 {
		t.Errorf("snapshot %+v", o)
	}
}

// TestTopLive redraws a few times and stops with its context.
func TestTopLive(t *testing.T) {
	t.Parallel()
	e := newObsEnv(t, httpFlags{})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	out, err := e.runTop(ctx, "--interval", "200ms")
	if err != nil {
		t.Fatalf("top: %v\n%s", err, out)
	}
	if n := strings.Count(out, "\x1b[H\x1b[2J"); n < 2 {
		t.Errorf("top redrew %d times, want several:\n%q", n, out)
	}
	if !strings.HasSuffix(out, "\x1b[?25h\n") {
		t.Errorf("top did not show the cursor again on exit")
	}
}

// TestTopUsage checks flag errors.
func TestTopUsage(t *testing.T) {
	t.Parallel()
	a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	cmd := a.topCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs([]string{"--interval", "1ms"})
	if err := cmd.Execute(); exitCode(err) != exitUsage {
		t.Errorf("--interval 1ms: %v, want a usage error", err)
	}
}
