package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// payFixture is a workflow charge → notify of type "pay" whose charge fails permanently until
// fixed, or for a negative amount.
type payFixture struct {
	*fixture
	fixed atomic.Bool
	calls calls
}

func setupPay(t *testing.T) *payFixture {
	t.Helper()
	p := &payFixture{fixture: setup(t, "pay")}
	wf := workflow.New("pay")
	wf.Node("charge", "pay")
	wf.Node("notify", "pay", "charge")
	p.apply(wf)
	p.worker(func(w *consumer.Worker) {
		w.Handle("pay", func(ctx context.Context, s *consumer.Step) (any, error) {
			p.calls.add(s)
			if s.Node != "charge" {
				return "notified", nil
			}
			var in struct {
				Input struct {
					Amount int `json:"amount"`
				} `json:"input"`
			}
			if err := s.Bind(&in); err != nil {
				return nil, err
			}
			if !p.fixed.Load() || in.Input.Amount < 0 {
				return nil, consumer.Permanent(fmt.Errorf("card declined\nissuer said: no (amount %d)", in.Input.Amount))
			}
			return map[string]int{"charged": in.Input.Amount}, nil
		})
	})
	return p
}

// failedRun starts a pay run whose charge fails, waits for the run to fail, and returns the
// run and its one DLQ entry.
func (p *payFixture) failedRun() (string, *dlq.Entry) {
	p.t.Helper()
	run := p.start("pay", `{"amount": 5}`)
	p.waitEnd(run, checkpoint.EndFailed)
	return run, p.entries(1)[0]
}

func TestReplayRunsTheStepAgain(t *testing.T) {
	t.Parallel()
	p := setupPay(t)
	ctx := context.Background()
	run, e := p.failedRun()

	// Show: the full error from the node state, the input, the run.
	d, err := dlq.Show(ctx, p.js, p.names, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.Error, "card declined\nissuer said") {
		t.Errorf("show error %q: want the node state's full (multi-line) text", d.Error)
	}
	if strings.Contains(e.Error, "\n") {
		t.Errorf("the header error should be one line: %q", e.Error)
	}
	var in producer.NodeInput
	if err := json.Unmarshal(d.Input, &in); err != nil || string(in.Input) != `{"amount":5}` || in.Nodes == nil {
		t.Errorf("show input %s: want the node's whole input (%v)", d.Input, err)
	}
	if d.Run == nil || d.Run.Status != checkpoint.EndFailed || d.Run.Nodes["charge"].Status != checkpoint.StatusDead {
		t.Errorf("show run: %+v", d.Run)
	}
	if d.NodeState == nil || d.NodeState.DLQSeq != e.ID || d.Headers[workflow.HeaderReason][0] != "permanent error" {
		t.Errorf("show node state %+v, headers %v", d.NodeState, d.Headers)
	}

	p.fixed.Store(true)
	res, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != dlq.StatusReplayed || res.RunID != run || res.Node != "charge" || res.Dispatch != workflow.DispatchReplay(e.ID) {
		t.Errorf("replay result: %+v", res)
	}
	p.waitEnd(run, checkpoint.EndCompleted)
	st := p.node(run, "charge")
	if st.Status != checkpoint.StatusDone || st.Replays != 1 || st.Attempts != 1 || st.Dispatch != res.Dispatch || st.LastError != "" {
		t.Errorf("charge after the replay: %+v", st)
	}
	if n := p.calls.get(run, "charge"); n != 2 {
		t.Errorf("charge ran %d times, want 2 (the failure and the replay)", n)
	}
	if n := p.calls.get(run, "notify"); n != 1 {
		t.Errorf("notify ran %d times, want 1", n)
	}
	if got, err := dlq.List(ctx, p.js, p.names, dlq.Filter{}); err != nil || len(got) != 0 {
		t.Errorf("the replayed entry should be deleted: %v, %v", got, err)
	}
	// Again: the entry is gone, and nothing runs.
	if _, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{}); !errors.Is(err, dlq.ErrNoEntry) {
		t.Errorf("second replay: want ErrNoEntry, got %v", err)
	}
	if _, err := dlq.Show(ctx, p.js, p.names, e.ID); !errors.Is(err, dlq.ErrNoEntry) {
		t.Errorf("show of a replayed entry: want ErrNoEntry, got %v", err)
	}
}

func TestReplayConcurrentRunsOnce(t *testing.T) {
	t.Parallel()
	p := setupPay(t)
	ctx := context.Background()
	run, e := p.failedRun()
	p.fixed.Store(true)

	var wg sync.WaitGroup
	results := make([]*dlq.ReplayResult, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{})
		})
	}
	wg.Wait()
	replayed := 0
	for i := range results {
		switch {
		case errs[i] == nil && results[i].Status == dlq.StatusReplayed:
			replayed++
		case errs[i] == nil && results[i].Status == dlq.StatusAlreadyReplayed, errors.Is(errs[i], dlq.ErrNoEntry):
		default:
			t.Errorf("replay %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if replayed != 1 {
		t.Errorf("%d replays report replayed, want 1", replayed)
	}
	p.waitEnd(run, checkpoint.EndCompleted)
	natstest.Eventually(t, 10*time.Second, func() bool { return pending(t, p.fixture, "pay") == 0 }, "steps left in the stream")
	if n := p.calls.get(run, "charge"); n != 2 {
		t.Errorf("charge ran %d times, want 2 (the failure and one replay)", n)
	}
	if st := p.node(run, "charge"); st.Replays != 1 {
		t.Errorf("replays = %d, want 1", st.Replays)
	}
}

func TestReplayEditedInput(t *testing.T) {
	t.Parallel()
	p := setupPay(t)
	p.fixed.Store(true)
	ctx := context.Background()
	run := p.start("pay", `{"amount": -1}`)
	p.waitEnd(run, checkpoint.EndFailed)
	e := p.entries(1)[0]

	for _, bad := range []string{`not json`, `[1, 2]`, `{"nodes": {}}`, `"x"`} {
		_, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{Input: json.RawMessage(bad)})
		if !errors.Is(err, producer.ErrBadInput) {
			t.Errorf("replay with input %s: want ErrBadInput, got %v", bad, err)
		}
	}
	if st := p.node(run, "charge"); st.Status != checkpoint.StatusDead {
		t.Fatalf("a refused edit changed the node: %+v", st)
	}

	res, err := dlq.Replay(ctx, p.js, p.store, p.names, e.ID, dlq.ReplayOptions{Input: json.RawMessage(`{"input": {"amount": 7}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != dlq.StatusReplayed || !res.Edited {
		t.Errorf("result: %+v", res)
	}
	p.waitEnd(run, checkpoint.EndCompleted)
	if got := p.calls.input(run, "charge", 1); got != `{"input":{"amount":7},"nodes":{}}` {
		t.Errorf("the replayed handler got input %s", got)
	}
	st := p.node(run, "charge")
	if string(st.Input) != `{"input":{"amount":7},"nodes":{}}` || st.EditedFrom != e.ID || string(st.Output) != `{"charged":7}` {
		t.Errorf("charge state: input %s, edited_from %d, output %s", st.Input, st.EditedFrom, st.Output)
	}
	// The edit is this node's only: its child gets the run's input and charge's output.
	var in producer.NodeInput
	if err := json.Unmarshal([]byte(p.calls.input(run, "notify", 0)), &in); err != nil ||
		string(in.Input) != `{"amount":-1}` || string(in.Nodes["charge"]) != `{"charged":7}` {
		t.Errorf("notify input %s (%v)", p.calls.input(run, "notify", 0), err)
	}
}

func TestReplayRefused(t *testing.T) {
	t.Parallel()
	p := setupPay(t)
	ctx := context.Background()
	cancelled := p.start("pay", `{"amount": 1}`)
	gone := p.start("pay", `{"amount": 2}`)
	dry := p.start("pay", `{"amount": 3}`)
	for _, run := range []string{cancelled, gone, dry} {
		p.waitEnd(run, checkpoint.EndFailed)
	}
	byRun := map[string]uint64{}
	for _, e := range p.entries(3) {
		byRun[e.RunID] = e.ID
	}
	// A cancelled run (cancel.<run> is there: cancelled before its end was written).
	if _, err := p.store.KV().Create(ctx, workflow.CancelKey(cancelled), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// A run whose record is gone.
	if err := p.store.KV().Purge(ctx, workflow.RunKey(gone)); err != nil {
		t.Fatal(err)
	}
	// A malformed entry.
	badID, err := dlq.Publish(ctx, p.js, p.names, []byte("garbage"), dlq.Failure{Reason: "malformed: body is not JSON", StreamSeq: 9999})
	if err != nil {
		t.Fatal(err)
	}
	p.fixed.Store(true)
	for _, c := range []struct {
		id   uint64
		want error
	}{{byRun[cancelled], dlq.ErrRunCancelled}, {byRun[gone], dlq.ErrRunGone}, {badID, dlq.ErrMalformedEntry}} {
		_, err := dlq.Replay(ctx, p.js, p.store, p.names, c.id, dlq.ReplayOptions{})
		var re *dlq.RefusedError
		if !errors.Is(err, c.want) || !errors.As(err, &re) || re.ID != c.id || strings.Contains(err.Error(), "\n") {
			t.Errorf("replay of entry %d: want a RefusedError wrapping %v, got %v", c.id, c.want, err)
		}
	}
	res, err := dlq.Replay(ctx, p.js, p.store, p.names, byRun[dry], dlq.ReplayOptions{DryRun: true})
	if err != nil || res.Status != dlq.StatusWouldReplay {
		t.Errorf("dry run: %+v, %v", res, err)
	}
	// Nothing changed: every entry is still there, every node still dead.
	if got, err := dlq.List(ctx, p.js, p.names, dlq.Filter{}); err != nil || len(got) != 4 {
		t.Errorf("DLQ after refusals: %d entries (%v), want 4", len(got), err)
	}
	for _, run := range []string{cancelled, dry} {
		if st := p.node(run, "charge"); st.Status != checkpoint.StatusDead || st.Replays != 0 {
			t.Errorf("run %s: charge %+v, want dead and never replayed", run, st)
		}
	}
	if n := p.calls.get(dry, "charge"); n != 1 {
		t.Errorf("a dry run ran the step: %d runs", n)
	}
}

// pending returns the steps of a type's consumer not yet acknowledged.
func pending(t *testing.T, f *fixture, typ string) uint64 {
	t.Helper()
	c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer(typ))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending + uint64(info.NumAckPending)
}
