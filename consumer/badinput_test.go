package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestBadInputCatalogue is the message and run side of the bad-input catalogue (the CLI and
// definition side is in cmd/jetflow and workflow): each case gets a clear one-line reason in
// the DLQ or a clear error, none panics, none loses a run, and the worker keeps working.
func TestBadInputCatalogue(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	ctx := context.Background()
	wf := workflow.New("cat")
	wf.Node("a", "work")
	f.apply(wf)
	expr := workflow.New("expr")
	expr.Node("missing", "work").WithArgs(map[string]any{"url": "${{ input.nope }}"})
	f.apply(expr)
	huge := workflow.New("huge")
	huge.Node("big", "work").WithArgs(map[string]any{"x": "${{ repeat('x', 100000000) }}"})
	f.apply(huge)
	out := workflow.New("out")
	out.Node("big", "work").WithArgs(map[string]any{"size": 300 << 10})
	f.apply(out)
	raw := workflow.New("raw")
	raw.Node("bad", "work").WithArgs(map[string]any{"raw": true})
	f.apply(raw)
	ref, err := f.store.WorkflowRef(ctx, "cat")
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	f.worker(Config{MaxPayload: 256 << 10}, func(w *Worker) { // the "out" node's 300 KiB is over it
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			runs.Add(1)
			if n, ok := s.With["size"].(float64); ok { // definitions travel as JSON: numbers are float64
				return strings.Repeat("x", int(n)), nil
			}
			if s.With["raw"] == true {
				return json.RawMessage(`{"unterminated": `), nil
			}
			return "ok", nil
		})
		w.Handle("noop", func(context.Context, *Step) (any, error) { return nil, nil })
	})

	envelope := func(mod func(e map[string]any)) []byte {
		e := map[string]any{"v": 1, "run_id": "r1", "workflow": "cat", "def": ref.Hash, "node": "a", "input": nil, "dispatch": "d"}
		mod(e)
		b, _ := json.Marshal(e)
		return b
	}
	messages := []struct {
		name    string
		subject string // default jetflow.step.work.cat.a
		body    []byte
		reason  string // the DLQ reason starts with this
	}{
		{"binary garbage", "", []byte{0xff, 0x00, 0xfe, 0x01, 0x02}, "malformed: body is not a JSON envelope"},
		{"empty body", "", nil, "malformed: body is not a JSON envelope"},
		{"a JSON array", "", []byte(`[1,2,3]`), "malformed: body is not a JSON envelope"},
		{"trailing data", "", append(envelope(func(map[string]any) {}), []byte(" {}")...), "malformed: body is not a JSON envelope"},
		{"another envelope version", "", envelope(func(e map[string]any) { e["v"] = 2 }), "malformed: envelope version 2"},
		{"run ID with a dot", "", envelope(func(e map[string]any) { e["run_id"] = "a.b" }), "malformed: bad run_id"},
		{"run ID wildcard *", "", envelope(func(e map[string]any) { e["run_id"] = "*" }), "malformed: bad run_id"},
		{"run ID wildcard >", "", envelope(func(e map[string]any) { e["run_id"] = ">" }), "malformed: bad run_id"},
		{"run ID with a space", "", envelope(func(e map[string]any) { e["run_id"] = "a b" }), "malformed: bad run_id"},
		{"run ID in unicode", "", envelope(func(e map[string]any) { e["run_id"] = "запуск" }), "malformed: bad run_id"},
		{"run ID of 65 bytes", "", envelope(func(e map[string]any) { e["run_id"] = strings.Repeat("r", 65) }), "malformed: bad run_id"},
		{"node name escaping its key", "", envelope(func(e map[string]any) { e["node"] = "a.>" }), "malformed: bad node name"},
		{"non-canonical dispatch", "", envelope(func(e map[string]any) { e["dispatch"] = "s01" }), "malformed: bad dispatch"},
		{"bad definition hash", "", envelope(func(e map[string]any) { e["def"] = "../../etc" }), "malformed: bad definition hash"},
		{"unknown definition", "", envelope(func(e map[string]any) { e["def"] = strings.Repeat("ab", 32) }), "malformed: unknown definition"},
		{"unknown workflow for the definition", "", envelope(func(e map[string]any) { e["workflow"] = "other" }), "malformed: definition"},
		{"unknown node", "", envelope(func(e map[string]any) { e["node"] = "zz" }), "malformed: workflow cat has no node zz"},
		{"node of another type", "jetflow.step.noop.cat.a", envelope(func(map[string]any) {}), "malformed: node a is of type work, delivered as noop"},
		{"deep JSON nesting", "", []byte(`{"v":1,"run_id":"r1","workflow":"cat","def":"` + ref.Hash + `","node":"a","dispatch":"d","input":` +
			strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`), "malformed: body is not a JSON envelope: invalid character '[' exceeded max depth"},
	}
	for i, m := range messages {
		subject := m.subject
		if subject == "" {
			subject = f.names.StepSubject("work", "cat", "a")
		}
		msg := &nats.Msg{Subject: subject, Data: m.body, Header: nats.Header{}}
		msg.Header.Set(workflow.HeaderMsgID, fmt.Sprintf("bad-%d", i))
		if _, err := f.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("%s: publish: %v", m.name, err)
		}
	}

	// Runs whose steps fail with a clear, permanent reason.
	type runCase struct {
		name, wf, reason, errHas string
	}
	runCases := []runCase{
		{"expression reads a missing field", "expr", "permanent error", `input has no field "nope"`},
		{"expression builds a huge string", "huge", "permanent error", "with.x"},
		{"output over the limit", "out", "permanent error", "output is"},
		{"handler returns invalid raw JSON", "raw", "permanent error", "not valid JSON"},
	}
	runIDs := map[string]string{}
	for _, rc := range runCases {
		runIDs[rc.name] = f.start(rc.wf, `{}`)
	}

	// Refused before anything is published.
	refused := []struct {
		name  string
		start func() error
		want  error
	}{
		{"oversized input", func() error {
			_, err := f.prod.Start(ctx, "cat", []byte(`"`+strings.Repeat("x", producer.DefaultMaxInputBytes)+`"`), producer.StartOptions{})
			return err
		}, producer.ErrBadInput},
		{"input that is not JSON", func() error {
			_, err := f.prod.Start(ctx, "cat", []byte(`{"a":`), producer.StartOptions{})
			return err
		}, producer.ErrBadInput},
		{"deeply nested input", func() error {
			_, err := f.prod.Start(ctx, "cat", []byte(strings.Repeat("[", 20000)+strings.Repeat("]", 20000)), producer.StartOptions{})
			return err
		}, producer.ErrBadInput},
		{"run ID escaping its key", func() error {
			_, err := f.prod.Start(ctx, "cat", nil, producer.StartOptions{ID: "../x"})
			return err
		}, producer.ErrBadInput},
		{"run ID with a wildcard", func() error {
			_, err := f.prod.Start(ctx, "cat", nil, producer.StartOptions{ID: "run.*"})
			return err
		}, producer.ErrBadInput},
		{"unknown workflow", func() error {
			_, err := f.prod.Start(ctx, "nope", nil, producer.StartOptions{})
			return err
		}, producer.ErrUnknownWorkflow},
	}
	for _, r := range refused {
		err := r.start()
		if !errors.Is(err, r.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want a one-line %v", r.name, err, r.want)
		}
	}

	want := len(messages) + len(runCases)
	var entries []*dlq.Entry
	natstest.Eventually(t, 20*time.Second, func() bool {
		entries, _ = dlq.List(ctx, f.js, f.names, dlq.Filter{})
		return len(entries) >= want
	}, "DLQ did not reach %d entries: %v; runs %v", want, reasonsOf(&entries), runIDs)
	byReason := map[string]int{}
	for _, e := range entries {
		if strings.Contains(e.Reason, "\n") || strings.Contains(e.Error, "\n") {
			t.Errorf("entry %d: reason or error spans lines: %q / %q", e.ID, e.Reason, e.Error)
		}
		byReason[e.Reason]++
	}
	for _, m := range messages {
		found := false
		for r := range byReason {
			if strings.HasPrefix(r, m.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no DLQ entry with a reason starting %q (have %v)", m.name, m.reason, byReason)
		}
	}
	for _, rc := range runCases {
		id := runIDs[rc.name]
		end := f.waitEnd(id, 20*time.Second)
		st := f.node(id, f.mustDef(rc.wf).Nodes[0].Name)
		if end.Status != checkpoint.EndFailed || st.Reason != rc.reason || !strings.Contains(st.LastError, rc.errHas) {
			t.Errorf("%s: run %s, node %+v; want failed with %q containing %q", rc.name, end.Status, st, rc.reason, rc.errHas)
		}
	}

	// What an undecodable step still says is kept: its workflow and node from the subject, its
	// run from the body when the body names a valid one.
	for _, e := range entries {
		undecodable := strings.HasPrefix(e.Reason, "malformed: body") || strings.HasPrefix(e.Reason, "malformed: envelope") ||
			strings.HasPrefix(e.Reason, "malformed: bad")
		switch {
		case !undecodable:
		case e.Workflow != "cat" || e.Node != "a":
			t.Errorf("malformed entry %d (%s): workflow %q node %q, want the subject's", e.ID, e.Reason, e.Workflow, e.Node)
		case strings.HasPrefix(e.Reason, "malformed: envelope version 2") && e.RunID == "":
			t.Errorf("malformed entry %d (%s): the body's run ID is lost", e.ID, e.Reason)
		}
	}

	// The worker still works.
	if end := f.waitEnd(f.start("cat", `{"after":"garbage"}`), 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("a good run after the garbage ended %s", end.Status)
	}
}

func (f *fixture) mustDef(name string) *workflow.Workflow {
	f.t.Helper()
	ref, err := f.store.WorkflowRef(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := f.store.Definition(context.Background(), ref.Hash)
	if err != nil {
		f.t.Fatal(err)
	}
	return w
}

// TestWorkflowUpdatedWhileRunsInFlight: a run keeps the definition it started with when a new
// version is applied mid-run.
func TestWorkflowUpdatedWhileRunsInFlight(t *testing.T) {
	t.Parallel()
	f := setup(t, "gate")
	v1 := workflow.New("evolving")
	v1.Node("a", "gate")
	v1.Node("b", "gate", "a")
	f.apply(v1)
	release := make(chan struct{})
	var seen atomic.Value
	f.worker(Config{}, func(w *Worker) {
		w.Handle("gate", func(ctx context.Context, s *Step) (any, error) {
			if s.Node == "a" {
				<-release
			}
			seen.Store(s.Node)
			return s.Node, nil
		})
	})
	id := f.start("evolving", `{}`)
	natstest.Eventually(t, 10*time.Second, func() bool {
		st := f.node(id, "a")
		return st == nil // still running a's handler (no state written on a first delivery)
	}, "run did not start")
	v2 := workflow.New("evolving")
	v2.Node("x", "gate") // a different graph altogether
	f.apply(v2)
	close(release)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if st := f.node(id, "b"); st == nil || st.Status != checkpoint.StatusDone {
		t.Fatalf("node b of the original definition: %+v", st)
	}
	// New runs use v2.
	id2 := f.start("evolving", `{}`)
	if end := f.waitEnd(id2, 20*time.Second); end.Status != checkpoint.EndCompleted || f.node(id2, "x") == nil {
		t.Fatalf("a run of v2: %s", end.Status)
	}
}

// TestReplayOfAnAlreadyReplayedEntry: replaying an entry a second time finds nothing and runs
// nothing.
func TestReplayOfAnAlreadyReplayedEntry(t *testing.T) {
	t.Parallel()
	f := setup(t, "pay")
	wf := workflow.New("pay")
	wf.Node("charge", "pay")
	f.apply(wf)
	var fixed atomic.Bool
	var calls atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle("pay", func(context.Context, *Step) (any, error) {
			calls.Add(1)
			if !fixed.Load() {
				return nil, Permanent(errors.New("card declined"))
			}
			return "paid", nil
		})
	})
	id := f.start("pay", `{}`)
	f.waitEnd(id, 20*time.Second)
	e := f.dlq(1)[0]
	fixed.Store(true)
	ctx := context.Background()
	if _, err := dlq.Replay(ctx, f.js, f.store, f.names, e.ID, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		end, _, _ := f.store.End(ctx, id)
		return end != nil && end.Status == checkpoint.EndCompleted
	}, "the replayed run did not complete")
	_, err := dlq.Replay(ctx, f.js, f.store, f.names, e.ID, dlq.ReplayOptions{})
	if !errors.Is(err, dlq.ErrNoEntry) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("second replay: %v, want a one-line 'no DLQ entry'", err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.pending("pay") == 0 }, "steps left")
	if calls.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2 (the failure and the replay)", calls.Load())
	}
}

// reasonsOf lists the reasons of entries (for failure messages).
func reasonsOf(entries *[]*dlq.Entry) fmt.Stringer { return reasonList{entries} }

type reasonList struct{ e *[]*dlq.Entry }

func (r reasonList) String() string {
	var out []string
	for _, e := range *r.e {
		out = append(out, e.Reason)
	}
	return strings.Join(out, " | ")
}
