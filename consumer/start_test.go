package consumer

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestStartRequestsAWorkerRefusesGoToTheDLQ: a start request that cannot start a run (not
// decodable, on another workflow's subject, of a workflow never applied, or of a run ID taken
// by another input) runs no handler, writes no record, and is filed in the DLQ under the
// workflow's _start node with a reason; the good requests next to them start their runs.
func TestStartRequestsAWorkerRefusesGoToTheDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("greet")
	wf.Node("a", "work")
	f.apply(wf)
	var runs atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.Add(1); return "ok", nil })
	})
	ctx := context.Background()
	taken := f.start("greet", `{"n":1}`)
	f.waitEnd(taken, 30*time.Second)

	publish := func(subject, body string) {
		t.Helper()
		msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: []byte(body)}
		msg.Header.Set(workflow.HeaderMsgID, "test-"+subject+"-"+body)
		if _, err := f.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// A run that is alive (its record written, no end yet), whose ID a refused request names.
	ref, err := f.store.WorkflowRef(ctx, "greet")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: "alive", Workflow: "greet", Def: ref.Hash, Input: []byte(`{}`), Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ subject, body, run, wf, reason string }{
		{f.names.StartSubject("nowhere"), `{"v":1,"run_id":"alive","workflow":"nowhere","input":{}}`, "alive", "nowhere", `unknown workflow "nowhere"`},
		{f.names.StartSubject("greet"), `{"v":1,"run_id":`, "", "greet", "malformed: start request is not JSON"},
		{f.names.StartSubject("greet"), `{"v":2,"run_id":"r-v2","workflow":"greet","input":{}}`, "r-v2", "greet", "malformed: start request version 2"},
		{f.names.StartSubject("greet"), `{"v":1,"run_id":"r-other","workflow":"other","input":{}}`, "r-other", "other", "malformed: start request of workflow other came on subject"},
		{f.names.StartSubject("nowhere"), `{"v":1,"run_id":"r-nowhere","workflow":"nowhere","input":{}}`, "r-nowhere", "nowhere", `unknown workflow "nowhere"`},
		{f.names.StartSubject("greet"), `{"v":1,"run_id":"` + taken + `","workflow":"greet","input":{"n":2}}`, taken, "greet", "run ID " + taken + " already used"},
	}
	for _, c := range cases {
		publish(c.subject, c.body)
	}
	good := f.start("greet", `{"n":3}`)
	f.waitEnd(good, 30*time.Second)
	natstest.Eventually(t, 30*time.Second, func() bool {
		entries, err := listDLQ(f)
		return err == nil && len(entries) == len(cases)
	}, "the refused start requests never all reached the DLQ")
	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	// Requests are handled at once, several at a time: the entries come in any order.
	for _, c := range cases {
		found := false
		for _, e := range entries {
			found = found || e.Node == workflow.StartNode && e.Workflow == c.wf && e.RunID == c.run && strings.HasPrefix(e.Reason, c.reason)
		}
		if !found {
			t.Errorf("no DLQ entry of workflow %q, node %q, run %q with reason %q…", c.wf, workflow.StartNode, c.run, c.reason)
		}
	}
	if t.Failed() {
		for _, e := range entries {
			t.Logf("DLQ entry: workflow %q node %q run %q reason %q", e.Workflow, e.Node, e.RunID, e.Reason)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("handlers ran %d times, want 2 (the two started runs)", n)
	}
	for _, id := range []string{"r-v2", "r-other", "r-nowhere"} {
		if _, err := f.store.Run(ctx, id); err == nil {
			t.Errorf("refused start request of %s wrote a run record", id)
		}
	}
	if r, err := f.store.Run(ctx, taken); err != nil || string(r.Input) != `{"n":1}` {
		t.Errorf("run %s: %+v, %v; want its first record kept", taken, r, err)
	}
	// Whoever waits for a refused run hears why (when the request could be read); the run
	// that owns a taken ID keeps its end.
	for _, id := range []string{"r-other", "r-nowhere"} {
		if end, _, err := f.store.End(ctx, id); err != nil || end == nil || end.Status != checkpoint.EndFailed || !strings.HasPrefix(end.Reason, "start refused: ") {
			t.Errorf("end of refused run %s: %+v, %v; want failed, start refused: …", id, end, err)
		}
	}
	if end, _, err := f.store.End(ctx, "alive"); err != nil || end != nil {
		t.Errorf("end of the live run a refused request named: %+v, %v; want none", end, err)
	}
	if end, _, err := f.store.End(ctx, taken); err != nil || end == nil || end.Status != checkpoint.EndCompleted {
		t.Errorf("end of run %s: %+v, %v; want its own, completed", taken, end, err)
	}
}

// TestStartRequestDeliveredAgainFinishesTheRun: a worker that wrote the run record and died
// before publishing the roots leaves the start request to be delivered again; that delivery
// finds the record and publishes the roots, and the run completes once.
func TestStartRequestDeliveredAgainFinishesTheRun(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("again")
	wf.Node("a", "work")
	wf.Node("b", "work")
	f.apply(wf)
	ctx := context.Background()
	ref, err := f.store.WorkflowRef(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	// What the first delivery did before its worker died: the record only.
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: "half-started", Workflow: "again", Def: ref.Hash, Input: []byte(`{"k":1}`), Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	req := &workflow.StartRequest{RunID: "half-started", Workflow: "again", Input: []byte(`{"k":1}`)}
	body, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: f.names.StartSubject("again"), Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderMsgID, req.RunID)
	if _, err := f.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.Add(1); return "ok", nil })
	})
	if end := f.waitEnd("half-started", 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("handlers ran %d times, want 2 (roots a and b once each)", n)
	}
	if entries, err := listDLQ(f); err != nil || len(entries) != 0 {
		t.Errorf("DLQ: %d entries (%v), want none", len(entries), err)
	}
}
