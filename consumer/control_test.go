package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// echo is a handler that returns its node's name, or for an item, the item doubled.
func echo(runs *counter) HandlerFunc {
	return func(_ context.Context, s *Step) (any, error) {
		runs.inc(s)
		if s.Index >= 0 {
			var v float64
			if err := json.Unmarshal(s.Item, &v); err != nil {
				return nil, Permanent(err)
			}
			return v * 2, nil
		}
		return s.Node, nil
	}
}

func (f *fixture) mustStatus(run, node, want string) *checkpoint.Node {
	f.t.Helper()
	st := f.node(run, node)
	if st == nil || st.Status != want {
		f.t.Fatalf("node %s: %+v, want %s", node, st, want)
	}
	return st
}

// An if/else pair that joins again runs its join once; the chain below the skipped branch
// is skipped, none of its handlers run, and the run completes.
func TestIfElseJoinAndSkippedChain(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("branch")
	wf.Node("classify", "work")
	yes := wf.Node("urgent", "work", "classify")
	yes.If = "${{ input.priority == 'high' }}"
	no := wf.Node("routine", "work", "classify")
	no.If = "${{ input.priority != 'high' }}"
	wf.Node("routine-2", "work", "routine") // a chain under the skipped branch
	wf.Node("routine-3", "work", "routine-2")
	wf.Node("reply", "work", "urgent", "routine")
	f.apply(wf)
	var runs counter
	var replyInput atomic.Value
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if s.Node == "reply" {
				replyInput.Store(string(s.Input))
			}
			return echo(&runs)(ctx, s)
		})
	})
	id := f.start("branch", `{"priority":"high"}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	for _, n := range []string{"classify", "urgent", "reply"} {
		f.mustStatus(id, n, checkpoint.StatusDone)
		if got := runs.get(id, n); got != 1 {
			t.Errorf("node %s ran %d times, want 1", n, got)
		}
	}
	for _, n := range []string{"routine", "routine-2", "routine-3"} {
		st := f.mustStatus(id, n, checkpoint.StatusSkipped)
		if st.Attempts != 0 || len(st.Output) != 0 || runs.get(id, n) != 0 {
			t.Errorf("skipped node %s: %+v, ran %d times; want no attempt, no output, no run", n, st, runs.get(id, n))
		}
	}
	var in producer.NodeInput
	if err := json.Unmarshal([]byte(replyInput.Load().(string)), &in); err != nil {
		t.Fatal(err)
	}
	if string(in.Nodes["urgent"]) != `"urgent"` || string(in.Nodes["routine"]) != "null" {
		t.Fatalf("join's input nodes %v: want urgent's output and null for the skipped routine", in.Nodes)
	}
}

// A node whose parents are all skipped is skipped without evaluating its own if; a run
// whose sinks are all skipped completes.
func TestEverySinkSkippedCompletes(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("allskip")
	wf.Node("a", "work")
	b := wf.Node("b", "work", "a")
	b.If = "${{ false }}"
	c := wf.Node("c", "work", "a")
	c.If = "${{ nodes.a == 'nope' }}"
	d := wf.Node("d", "work", "b", "c")
	d.If = "${{ nodes.b.missing.field }}" // would fail if it were evaluated
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	id := f.start("allskip", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	for _, n := range []string{"b", "c", "d"} {
		f.mustStatus(id, n, checkpoint.StatusSkipped)
	}
}

// An if whose expression fails at run time fails the node permanently, with the expression
// in the reason.
func TestIfThatCannotBeEvaluatedFailsTheNode(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("badif")
	a := wf.Node("a", "work")
	a.If = "${{ input.count > 3 }}"
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	id := f.start("badif", `{"count":"many"}`)
	end := f.waitEnd(id, 20*time.Second)
	if end.Status != checkpoint.EndFailed || runs.get(id, "a") != 0 {
		t.Fatalf("run ended %s (%s), a ran %d times; want failed, never run", end.Status, end.Reason, runs.get(id, "a"))
	}
	if e := f.dlq(1)[0]; e.Node != "a" || !containsAll(e.Reason, "if:", "input.count") {
		t.Fatalf("DLQ entry %+v: want node a, reason naming the if", e)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// overlap counts the handlers running at once, per node, from the handlers themselves.
type overlap struct {
	mu       sync.Mutex
	now, max int
}

func (o *overlap) enter() {
	o.mu.Lock()
	o.now++
	o.max = max(o.max, o.now)
	o.mu.Unlock()
}

func (o *overlap) leave() {
	o.mu.Lock()
	o.now--
	o.mu.Unlock()
}

// A for_each node runs once per item, each item exactly once, never more than max_parallel
// at once (counted by the handlers), and its output is the items' outputs in order. An empty
// list makes the node done with []; the node's child sees the list.
func TestForEach(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			f := setup(t, "work")
			wf := workflow.New("map")
			wf.Node("split", "work")
			m := wf.Node("double", "work", "split")
			m.ForEach = "${{ input.items }}"
			m.MaxParallel = 50
			m.With = map[string]any{"at": "${{ index }}", "value": "${{ item }}"}
			wf.Node("sum", "work", "double")
			f.apply(wf)
			var runs counter
			var ov overlap
			var sumInput atomic.Value
			var badWith atomic.Value
			f.worker(Config{Concurrency: 64}, func(w *Worker) {
				w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
					switch {
					case s.Node == "sum":
						sumInput.Store(string(s.Input))
					case s.Index >= 0:
						ov.enter()
						defer ov.leave()
						if at, _ := s.With["at"].(float64); int(at) != s.Index {
							badWith.Store(fmt.Sprintf("item %d: with.at = %v", s.Index, s.With["at"]))
						}
						time.Sleep(time.Millisecond)
					}
					return echo(&runs)(ctx, s)
				})
			})
			items := make([]int, n)
			for i := range items {
				items[i] = i
			}
			in, _ := json.Marshal(map[string]any{"items": items})
			id := f.start("map", string(in))
			if end := f.waitEnd(id, 90*time.Second); end.Status != checkpoint.EndCompleted {
				t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
			}
			if v := badWith.Load(); v != nil {
				t.Fatal(v)
			}
			st := f.mustStatus(id, "double", checkpoint.StatusDone)
			var out []float64
			if err := json.Unmarshal(st.Output, &out); err != nil || len(out) != n {
				t.Fatalf("output %.200s: want a list of %d", st.Output, n)
			}
			for i, v := range out {
				if v != float64(2*i) {
					t.Fatalf("output[%d] = %v, want %d (in item order)", i, v, 2*i)
				}
			}
			for i := range n {
				if got := runs.n[workflow.ItemIdempotencyKey(id, "double", i)]; got != 1 {
					t.Fatalf("item %d ran %d times, want 1", i, got)
				}
			}
			if ov.max > 50 {
				t.Fatalf("%d items ran at once; max_parallel is 50", ov.max)
			}
			var sin producer.NodeInput
			if err := json.Unmarshal([]byte(sumInput.Load().(string)), &sin); err != nil || len(sin.Nodes["double"]) == 0 {
				t.Fatalf("sum's input %v: want double's list", sumInput.Load())
			}
			if n > 0 && (st.Items == nil || st.Items.Count != n || st.Items.Done != n || st.Items.Dead != 0 || len(st.Items.Inflight) != 0) {
				t.Fatalf("items %+v: want %d counted done, none in flight", st.Items, n)
			}
		})
	}
}

// One item that fails permanently makes the node dead and the run failed at once, with a
// DLQ entry naming the item; the other items run to their end. Replaying the entry re-runs
// that item alone, and the run completes.
func TestForEachItemDiesAndIsReplayedAlone(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("mapfail")
	m := wf.Node("each", "work")
	m.ForEach = "${{ input }}"
	m.MaxParallel = 2
	wf.Node("after", "work", "each")
	f.apply(wf)
	var runs counter
	var failed atomic.Bool
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if s.Index == 3 && failed.CompareAndSwap(false, true) {
				runs.inc(s)
				return nil, Permanent(errors.New("bad chunk"))
			}
			return echo(&runs)(ctx, s)
		})
	})
	id := f.start("mapfail", `[0,1,2,3,4,5,6,7]`)
	end := f.waitEnd(id, 20*time.Second)
	if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "node each: item 3") {
		t.Fatalf("run ended %s (%s), want failed naming item 3", end.Status, end.Reason)
	}
	e := f.dlq(1)[0]
	if e.Item == nil || *e.Item != 3 || e.Node != "each" {
		t.Fatalf("DLQ entry %+v: want node each, item 3", e)
	}
	// The other items run to their end; the node stays dead.
	natstest.Eventually(t, 20*time.Second, func() bool {
		st := f.node(id, "each")
		return st.Items != nil && st.Items.Done == 7 && st.Items.Dead == 1
	}, "the other items did not finish")
	f.mustStatus(id, "each", checkpoint.StatusDead)
	res, err := dlq.Replay(context.Background(), f.js, f.store, f.names, e.ID, dlq.ReplayOptions{})
	if err != nil || res.Status != dlq.StatusReplayed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		end, _, err := f.store.End(context.Background(), id)
		return err == nil && end != nil && end.Status == checkpoint.EndCompleted
	}, "the run did not complete after the replay")
	for i := range 8 {
		want := 1
		if i == 3 {
			want = 2
		}
		if got := runs.n[workflow.ItemIdempotencyKey(id, "each", i)]; got != want {
			t.Errorf("item %d ran %d times, want %d", i, got, want)
		}
	}
	var out []float64
	if err := json.Unmarshal(f.mustStatus(id, "each", checkpoint.StatusDone).Output, &out); err != nil || len(out) != 8 || out[3] != 6 {
		t.Fatalf("output %v: want 8 items, item 3 doubled", out)
	}
	f.mustStatus(id, "after", checkpoint.StatusDone)
}

// A for_each expression that gives no list, or too many items, fails the node permanently.
func TestForEachRefusesWhatIsNotAList(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("notalist")
	m := wf.Node("each", "work")
	m.ForEach = "${{ input }}"
	f.apply(wf)
	var runs counter
	f.worker(Config{}, func(w *Worker) { w.Handle("work", echo(&runs)) })
	big := make([]int, workflow.MaxItems+1)
	bigIn, _ := json.Marshal(big)
	for _, c := range []struct{ input, says string }{
		{`{"a":1}`, "not a list"},
		{string(bigIn), "at most 10000"},
	} {
		id := f.start("notalist", c.input)
		end := f.waitEnd(id, 20*time.Second)
		if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "for_each") || !strings.Contains(end.Reason, c.says) {
			t.Errorf("input %.40s: run ended %s (%s); want failed, for_each: …%s", c.input, end.Status, end.Reason, c.says)
		}
	}
}

// subflowWorker registers the subflow type (the engine runs it) and work.
func subflowWorker(runs *counter, fail func(s *Step) bool) func(w *Worker) {
	return func(w *Worker) {
		w.Handle(workflow.SubflowType, func(context.Context, *Step) (any, error) {
			return nil, Permanent(errors.New("a workflow node runs no handler"))
		})
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if fail != nil && fail(s) {
				runs.inc(s)
				return nil, Permanent(errors.New("child broke"))
			}
			return echo(runs)(ctx, s)
		})
	}
}

func (f *fixture) applySubflowPair() {
	f.t.Helper()
	child := workflow.New("child")
	child.Node("c1", "work")
	child.Node("c2", "work", "c1")
	f.apply(child)
	parent := workflow.New("parent")
	parent.Node("p1", "work")
	parent.Node("sub", workflow.SubflowType, "p1").With = map[string]any{"workflow": "child", "input": "${{ input.x }}"}
	parent.Node("p2", "work", "sub")
	f.apply(parent)
}

// A subflow node starts its child run (whose record names the parent), waits for it, and is
// done with the child's sink outputs; starting the parent twice with the same ID starts one
// child.
func TestSubflowCompletes(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	f.applySubflowPair()
	var runs counter
	f.worker(Config{}, subflowWorker(&runs, nil))
	id, err := f.prod.Start(context.Background(), "parent", []byte(`{"x":5}`), producer.StartOptions{ID: "parent-run-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.prod.Start(context.Background(), "parent", []byte(`{"x":5}`), producer.StartOptions{ID: "parent-run-1"}); err != nil {
		t.Fatal(err)
	}
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	st := f.mustStatus(id, "sub", checkpoint.StatusDone)
	child := workflow.ChildRunID(id, "sub", workflow.DispatchFirst)
	if st.Child != child {
		t.Fatalf("sub's child %q, want %q", st.Child, child)
	}
	var out struct {
		RunID   string                     `json:"run_id"`
		Outputs map[string]json.RawMessage `json:"outputs"`
	}
	if err := json.Unmarshal(st.Output, &out); err != nil || out.RunID != child || string(out.Outputs["c2"]) != `"c2"` {
		t.Fatalf("sub's output %s: want the child's ID and its sink's output", st.Output)
	}
	rec, err := f.store.Run(context.Background(), child)
	if err != nil || rec.Parent == nil || rec.Parent.Run != id || rec.Parent.Node != "sub" || string(rec.Input) != "5" {
		t.Fatalf("child record %+v, %v: want parent %s/sub and input 5", rec, err, id)
	}
	if runs.get(child, "c1") != 1 || runs.get(child, "c2") != 1 || runs.get(id, "p2") != 1 {
		t.Fatalf("child nodes ran %d/%d times, p2 %d; want once each", runs.get(child, "c1"), runs.get(child, "c2"), runs.get(id, "p2"))
	}
	kids, err := f.store.ListRuns(context.Background(), checkpoint.RunFilter{Parent: id})
	if err != nil || len(kids) != 1 || kids[0].ID != child {
		t.Fatalf("children of %s: %v, %v; want one, %s", id, kids, err, child)
	}
}

// A child run that fails makes its subflow node fail permanently, naming the child.
func TestSubflowFails(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	f.applySubflowPair()
	var runs counter
	f.worker(Config{}, subflowWorker(&runs, func(s *Step) bool { return s.Node == "c2" }))
	id := f.start("parent", `{"x":1}`)
	end := f.waitEnd(id, 30*time.Second)
	child := workflow.ChildRunID(id, "sub", workflow.DispatchFirst)
	if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "subflow "+child+" failed") {
		t.Fatalf("run ended %s (%s), want failed: subflow %s failed", end.Status, end.Reason, child)
	}
	if cend := f.waitEnd(child, 5*time.Second); cend.Status != checkpoint.EndFailed {
		t.Fatalf("child ended %s", cend.Status)
	}
	if runs.get(id, "p2") != 0 {
		t.Fatal("p2 ran after its subflow failed")
	}
}

// Cancelling a run with a running map cancels every in-flight item's handler and runs none
// of the queued items; cancelling a parent cancels its child.
func TestCancelMapAndSubflow(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	wf := workflow.New("slowmap")
	m := wf.Node("each", "work")
	m.ForEach = "${{ input }}"
	m.MaxParallel = 3
	f.apply(wf)
	child := workflow.New("child")
	child.Node("c1", "work")
	f.apply(child)
	parent := workflow.New("parent")
	parent.Node("sub", workflow.SubflowType).With = map[string]any{"workflow": "child"}
	f.apply(parent)
	var started, cancelled atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle(workflow.SubflowType, func(context.Context, *Step) (any, error) { return nil, nil })
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			started.Add(1)
			<-ctx.Done()
			if errors.Is(context.Cause(ctx), ErrRunCancelled) {
				cancelled.Add(1)
			}
			return nil, ctx.Err()
		})
	})
	id := f.start("slowmap", `[1,2,3,4,5,6,7,8,9,10]`)
	natstest.Eventually(t, 20*time.Second, func() bool { return started.Load() == 3 }, "3 items did not start")
	if _, err := f.store.Cancel(context.Background(), id, ""); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return cancelled.Load() == 3 }, "the in-flight items' contexts were not cancelled")
	pid := f.start("parent", `{}`)
	kid := workflow.ChildRunID(pid, "sub", workflow.DispatchFirst)
	natstest.Eventually(t, 20*time.Second, func() bool { return started.Load() == 4 }, "the child's node did not start")
	if _, err := f.store.Cancel(context.Background(), pid, ""); err != nil {
		t.Fatal(err)
	}
	if end := f.waitEnd(kid, 20*time.Second); end.Status != checkpoint.EndCancelled {
		t.Fatalf("child ended %s (%s), want cancelled", end.Status, end.Reason)
	}
	time.Sleep(500 * time.Millisecond) // time for a queued item to be (wrongly) run
	if started.Load() != 4 {
		t.Fatalf("%d handlers started; queued items of a cancelled run must not run", started.Load())
	}
}

// TestControlCrashPoints stops a worker dead at each gap of control flow, then lets another
// take over: every run completes, each item and child counted once in the results.
func TestControlCrashPoints(t *testing.T) {
	t.Parallel()
	cases := []struct{ point, scenario string }{
		{pointSkipWritten, "branch"},
		{pointJoinComplete, "branch"},
		{pointItemsWritten, "map"},
		{pointItemsStarted, "map"},
		{pointItemDone, "map"},
		{pointItemCounted, "map"},
		{pointDoneWritten, "map"},
		{pointChildStarted, "subflow"},
		{pointParentParked, "subflow"},
	}
	for _, tc := range cases {
		t.Run(tc.point+"/"+tc.scenario, func(t *testing.T) {
			t.Parallel()
			f := setup(t, "work", workflow.SubflowType)
			var wfName, input string
			switch tc.scenario {
			case "branch":
				wf := workflow.New("branch")
				wf.Node("a", "work")
				b := wf.Node("b", "work", "a")
				b.If = "${{ false }}"
				wf.Node("b2", "work", "b")
				wf.Node("c", "work", "a")
				wf.Node("d", "work", "b2", "c")
				f.apply(wf)
				wfName, input = "branch", `{}`
			case "map":
				wf := workflow.New("map")
				m := wf.Node("each", "work")
				m.ForEach = "${{ input }}"
				m.MaxParallel = 2
				wf.Node("after", "work", "each")
				f.apply(wf)
				wfName, input = "map", `[1,2,3,4,5]`
			case "subflow":
				f.applySubflowPair()
				wfName, input = "parent", `{"x":2}`
			}
			var runs counter
			var died atomic.Bool
			var nc1 *nats.Conn
			_, nc1, _ = f.worker(Config{hook: func(point string) bool {
				if point != tc.point || !died.CompareAndSwap(false, true) {
					return false
				}
				nc1.Close()
				return true
			}}, subflowWorker(&runs, nil))
			id := f.start(wfName, input)
			natstest.Eventually(t, 20*time.Second, died.Load, "worker never reached %s", tc.point)
			f.worker(Config{}, subflowWorker(&runs, nil))
			if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
				t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
			}
			switch tc.scenario {
			case "branch":
				f.mustStatus(id, "b", checkpoint.StatusSkipped)
				f.mustStatus(id, "b2", checkpoint.StatusSkipped)
				if runs.get(id, "d") != 1 {
					t.Fatalf("join d ran %d times, want 1", runs.get(id, "d"))
				}
			case "map":
				var out []float64
				if err := json.Unmarshal(f.mustStatus(id, "each", checkpoint.StatusDone).Output, &out); err != nil || !slices.Equal(out, []float64{2, 4, 6, 8, 10}) {
					t.Fatalf("output %v, want [2 4 6 8 10]", out)
				}
				if runs.get(id, "after") != 1 {
					t.Fatalf("after ran %d times", runs.get(id, "after"))
				}
			case "subflow":
				child := workflow.ChildRunID(id, "sub", workflow.DispatchFirst)
				if runs.get(child, "c1") != 1 || runs.get(id, "p2") != 1 {
					t.Fatalf("child c1 ran %d times, p2 %d; want once", runs.get(child, "c1"), runs.get(id, "p2"))
				}
			}
		})
	}
}

// A subflow whose child can never start (its workflow is not registered: a definition stored
// without `workflows apply`'s check) fails the parent node instead of leaving it waiting.
func TestSubflowOfAnUnknownWorkflowFails(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	parent := workflow.New("orphan")
	parent.Node("sub", workflow.SubflowType).With = map[string]any{"workflow": "ghost"}
	f.apply(parent)
	var runs counter
	f.worker(Config{}, subflowWorker(&runs, nil))
	id := f.start("orphan", `{}`)
	end := f.waitEnd(id, 30*time.Second)
	if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "subflow") || !strings.Contains(end.Reason, "ghost") {
		t.Fatalf("run ended %s (%s); want failed, naming the subflow and the unknown workflow", end.Status, end.Reason)
	}
}

// A subflow nested deeper than 10 fails at run time (a chain of definitions stored without
// `workflows apply`'s static check): the 11th level's node fails, and every parent with it.
func TestSubflowTooDeepFails(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	self := workflow.New("deep")
	self.Node("again", workflow.SubflowType).With = map[string]any{"workflow": "deep"}
	f.apply(self) // runs itself: only the run-time depth limit stops it
	var runs counter
	f.worker(Config{Concurrency: 32}, subflowWorker(&runs, nil))
	id := f.start("deep", `{}`)
	end := f.waitEnd(id, 60*time.Second)
	if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "subflow") {
		t.Fatalf("run ended %s (%s); want failed by its subflows", end.Status, end.Reason)
	}
	kids, err := f.store.ListRuns(context.Background(), checkpoint.RunFilter{})
	if err != nil || len(kids) != workflow.MaxSubflowDepth+1 {
		t.Fatalf("%d runs (%v); want the top run and %d nested ones", len(kids), err, workflow.MaxSubflowDepth)
	}
}

// A child that ends before its parent's subflow node parked (the parent's worker slow, or
// dead and its step redelivered later) wakes a node that is not waiting yet: the wake carries
// no input and must not start the node (it did, and the node failed on `input.x` of null);
// the parent's own step parks and finds the end. Regression test for a ci-like failure of
// TestControlCrashPoints/child-started.
func TestSubflowChildEndsBeforeParentParks(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.SubflowType)
	f.applySubflowPair()
	var runs counter
	var held atomic.Bool
	var nc1 *nats.Conn
	ids := make(chan string, 1)
	// One step at a time in the held worker, so the wake goes to the other.
	_, nc1, _ = f.worker(Config{Concurrency: 1, hook: func(point string) bool {
		if point != pointChildStarted || !held.CompareAndSwap(false, true) {
			return false
		}
		id := <-ids
		f.waitEnd(workflow.ChildRunID(id, "sub", workflow.DispatchFirst), 20*time.Second)
		time.Sleep(time.Second) // the child's wake reaches the other worker first
		nc1.Close()
		return true
	}}, subflowWorker(&runs, nil))
	f.worker(Config{}, subflowWorker(&runs, nil))
	id := f.start("parent", `{"x":2}`)
	ids <- id
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s), want completed", end.Status, end.Reason)
	}
	child := workflow.ChildRunID(id, "sub", workflow.DispatchFirst)
	if runs.get(child, "c1") != 1 || runs.get(id, "p2") != 1 {
		t.Fatalf("child c1 ran %d times, p2 %d; want once", runs.get(child, "c1"), runs.get(id, "p2"))
	}
	if in := string(f.mustStatus(id, "sub", checkpoint.StatusDone).Input); !strings.Contains(in, `"x":2`) {
		t.Fatalf("the node kept input %s, want the parent's", in)
	}
}
