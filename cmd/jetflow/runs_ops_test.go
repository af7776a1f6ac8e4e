package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestRunsLsFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	e.worker("--types", "exec,noop") // no sleep: nap stays running

	start := func(args ...string) string {
		t.Helper()
		r := e.cli(append([]string{"start"}, args...)...)
		if r.code != 0 && r.code != exitFailed {
			t.Fatalf("start %v: %s", args, r)
		}
		return lines(r.stdout)[0]
	}
	d1 := start("diamond", "--wait")
	d2 := start("diamond", "--wait")
	broken := start("broken", "--wait")
	nap := start("nap")

	all := e.runsLs()
	if got := summaryIDs(all); !slices.Equal(got, []string{nap, broken, d2, d1}) {
		t.Fatalf("runs ls: %v, want newest first %v", got, []string{nap, broken, d2, d1})
	}
	for _, r := range all {
		if r.CreatedAt.IsZero() || (r.Status != "running") != (r.EndedAt != nil) {
			t.Errorf("run %+v", r)
		}
	}
	for _, c := range []struct {
		flags []string
		want  []string
	}{
		{[]string{"--status", "failed"}, []string{broken}},
		{[]string{"--status", "running"}, []string{nap}},
		{[]string{"--status", "completed", "--workflow", "diamond"}, []string{d2, d1}},
		{[]string{"--workflow", "diamond", "--limit", "1"}, []string{d2}},
		{[]string{"--since", "1h"}, []string{nap, broken, d2, d1}},
		{[]string{"--since", "7d"}, []string{nap, broken, d2, d1}},
		{[]string{"--since", "1d12h", "--status", "failed"}, []string{broken}},
		{[]string{"--status", "cancelled"}, nil},
		{[]string{"--workflow", "flaky"}, nil},
	} {
		if got := summaryIDs(e.runsLs(c.flags...)); !slices.Equal(got, c.want) {
			t.Errorf("runs ls %v: %v, want %v", c.flags, got, c.want)
		}
	}
	if r := e.cli("runs", "ls", "--since", "7days"); r.code != exitUsage || !strings.Contains(r.msg(), "7d") {
		t.Errorf("runs ls --since 7days: want a usage error naming 7d: %s", r)
	}
	r := e.cli("runs", "ls", "--json", "--workflow", "flaky")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("runs ls --json with no match should print []: %s", r)
	}
	r = e.cli("runs", "ls")
	out := lines(r.stdout)
	if r.code != 0 || len(out) != 5 || strings.Join(strings.Fields(out[0]), " ") != "ID WORKFLOW STATUS AGE DURATION REASON" ||
		!strings.HasPrefix(out[1], nap) || !strings.Contains(out[2], "failed") {
		t.Errorf("runs ls table: %s", r)
	}
}

func summaryIDs(runs []checkpoint.RunSummary) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.ID)
	}
	return out
}

func TestRunsCancelBlockingHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.lib()
	hold := workflow.New("hold")
	hold.Node("wait", "block")
	hold.Node("after", "block", "wait")
	c.applyGo(t, hold)
	fast := workflow.New("fast")
	fast.Node("x", "quick")
	c.applyGo(t, fast)
	type cancelled struct {
		cause error
		at    time.Time
	}
	started := make(chan string, 1)
	causes := make(chan cancelled, 1)
	e.goWorker(func(w *consumer.Worker) {
		w.Handle("block", func(ctx context.Context, s *consumer.Step) (any, error) {
			if s.Node == "after" {
				return nil, errors.New("after must not run in a cancelled run")
			}
			started <- s.RunID
			<-ctx.Done()
			causes <- cancelled{context.Cause(ctx), time.Now()}
			return nil, ctx.Err()
		})
		w.Handle("quick", func(ctx context.Context, s *consumer.Step) (any, error) { return "ok", nil })
	})

	r := e.cli("start", "hold")
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)
	select {
	case got := <-started:
		if got != id {
			t.Fatalf("started %s, want %s", got, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	// The issue: the run is cancelled when the command returns, and a handler running for it
	// has its context cancelled within 2 s of the command.
	cmdStart := time.Now()
	r = e.cli("runs", "cancel", id, "--reason", "no longer needed")
	took := time.Since(cmdStart)
	if r.code != 0 || r.stdout != "cancelled "+id+"\n" {
		t.Fatalf("runs cancel: %s", r)
	}
	v := getRun(t, e, id)
	if v.Status != "cancelled" || v.Reason != "no longer needed" || v.EndedAt == nil {
		t.Errorf("run right after cancel (the command took %v): %s", took, mustJSON(v))
	}
	select {
	case c := <-causes:
		if !errors.Is(c.cause, consumer.ErrRunCancelled) {
			t.Errorf("the handler's context was cancelled by %v, want ErrRunCancelled", c.cause)
		}
		if latency := c.at.Sub(cmdStart); latency > 2*time.Second {
			t.Errorf("the handler's context was cancelled %v after the command started, want within 2s (the command took %v)", latency, took)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler's context was not cancelled within 10s of the command (the command took %v)", took)
	}
	if r := e.cli("runs", "cancel", id); r.code != 0 || !strings.Contains(r.stdout, "already cancelled") {
		t.Errorf("second cancel: %s", r)
	}
	if r := e.cli("runs", "ls", "--status", "cancelled", "--json"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Errorf("runs ls --status cancelled: %s", r)
	}
	r = e.cli("runs", "watch", id)
	if out := lines(r.stdout); r.code != exitFailed || r.msg() != "" || len(out) == 0 || !strings.HasSuffix(out[len(out)-1], "run cancelled: no longer needed") {
		t.Errorf("runs watch of a cancelled run: %s", r)
	}

	r = e.cli("start", "fast", "--wait")
	if r.code != 0 {
		t.Fatalf("start fast: %s", r)
	}
	done := lines(r.stdout)[0]
	if r := e.cli("runs", "cancel", done); r.code != exitFailed || !strings.Contains(r.msg(), "already ended completed") {
		t.Errorf("cancel of a completed run: %s", r)
	}
}

// longNap parks its middle node for an hour.
const longNap = `name: longnap
nodes:
  - name: before
    type: noop
  - name: wait
    type: sleep
    needs: [before]
    with:
      duration: 1h
  - name: after
    type: noop
    needs: [wait]
`

func TestRunsCancelParked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "longnap.yaml")
	if err := os.WriteFile(file, []byte(longNap), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.cli("workflows", "apply", file); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	e.worker()
	r := e.cli("start", "longnap")
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)
	natstest.Eventually(t, 20*time.Second, func() bool {
		return getRun(t, e, id).Nodes["wait"].Status == "retrying"
	}, "the sleep node did not park")
	// The issue: cancelled within 2 s of the command; it is cancelled when the command returns.
	cmdStart := time.Now()
	if r := e.cli("runs", "cancel", id); r.code != 0 {
		t.Fatalf("runs cancel: %s", r)
	}
	took := time.Since(cmdStart)
	v := getRun(t, e, id)
	if v.Status != "cancelled" || v.Reason != checkpoint.DefaultCancelReason || v.Nodes["after"].Status != "pending" {
		t.Errorf("run right after cancel (the command took %v): %s", took, mustJSON(v))
	}
	if took > 2*time.Second {
		t.Errorf("runs cancel took %v, want the run cancelled within 2s", took)
	}
	r = e.cli("runs", "watch", id)
	if out := lines(r.stdout); r.code != exitFailed || len(out) < 3 ||
		!strings.HasSuffix(out[0], " before done (attempt 1)") || !strings.Contains(out[1], " wait waiting until ") ||
		!strings.HasSuffix(out[len(out)-1], " run cancelled: "+checkpoint.DefaultCancelReason) {
		t.Errorf("runs watch: %s", r)
	}
}

func TestRunsWatchCompleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	r := e.cli("start", "diamond")
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)
	// Watch first, then start the worker: the watch sees the run from start to end.
	type watched struct{ r result }
	done := make(chan watched, 1)
	go func() { done <- watched{e.cli("runs", "watch", id)} }()
	e.worker()
	var w watched
	select {
	case w = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("runs watch did not end")
	}
	r = w.r
	out := lines(r.stdout)
	if r.code != 0 || len(out) < 5 || !strings.HasSuffix(out[len(out)-1], " run completed") {
		t.Fatalf("runs watch: %s", r)
	}
	for _, node := range []string{"fetch", "words", "shout", "report"} {
		if !slices.ContainsFunc(out, func(l string) bool { return strings.HasSuffix(l, " "+node+" done (attempt 1)") }) {
			t.Errorf("runs watch lacks %q done:\n%s", node, r.stdout)
		}
	}
	// --json: one object a line, the end last.
	r = e.cli("runs", "watch", id, "--json")
	out = lines(r.stdout)
	var last watchLine
	if r.code != 0 || len(out) != 5 || json.Unmarshal([]byte(out[4]), &last) != nil || last.End == nil || last.End.Status != "completed" {
		t.Errorf("runs watch --json: %s", r)
	}
}
