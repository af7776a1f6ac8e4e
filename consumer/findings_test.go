package consumer

// Tests for the review findings of issue #11 on the step state machine. Each reproduces one
// finding on a real server and asserts what DESIGN.md promises; they use only the fixture,
// the public API and the Config test hooks (hook, grace, the point* names), so that a rewrite
// of process.go, worker.go and protect.go keeps them compiling.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// within polls cond every 20 ms for at most timeout and reports whether it held: for a
// test that goes on to report what it found instead of stopping at the first timeout.
func within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// startWorker starts a worker as fixture.worker does, but keeps cfg.DrainTimeout (default
// 5 s), which fixture.worker overrides. stop cancels Run's context and waits for Run.
func (f *fixture) startWorker(cfg Config, reg func(w *Worker)) (*Worker, *nats.Conn, func()) {
	f.t.Helper()
	nc, err := nats.Connect(f.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		f.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	store, err := checkpoint.Open(context.Background(), js, f.names)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.Names = f.names
	cfg.PollWait = 200 * time.Millisecond
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	w, err := New(js, store, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	reg(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("worker: %v", err)
			}
			nc.Close()
		})
	}
	f.t.Cleanup(stop)
	return w, nc, stop
}

// consumerInfo reads the info of a node type's consumer.
func (f *fixture) consumerInfo(typ string) *jetstream.ConsumerInfo {
	f.t.Helper()
	c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer(typ))
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// openBreaker writes the shared trip of a breaker key, open until until, as a worker whose
// breaker opened would.
func (f *fixture) openBreaker(key string, until time.Time) {
	f.t.Helper()
	kv, err := f.js.KeyValue(context.Background(), f.names.BreakersBucket())
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := json.Marshal(&breaker.Trip{Key: key, OpenUntil: until, Reason: "breaker", By: "test", OpenFor: time.Second, Limit: 1})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), breaker.BucketKey(key), b); err != nil {
		f.t.Fatal(err)
	}
}

// rootEnvelope is the envelope of a root node's step of run id, with dispatch.
func (f *fixture) rootEnvelope(id, node, dispatch string) *workflow.Envelope {
	f.t.Helper()
	r, err := f.store.Run(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	input, err := producer.EncodeNodeInput(r.Input, map[string]json.RawMessage{})
	if err != nil {
		f.t.Fatal(err)
	}
	return &workflow.Envelope{RunID: id, Workflow: r.Workflow, Def: r.Def, Node: node, Input: input, Dispatch: dispatch}
}

// brief prints a node state in one short line for failure messages.
func brief(st *checkpoint.Node) string {
	if st == nil {
		return "no state"
	}
	return fmt.Sprintf("{%s attempts=%d crashes=%d dispatch=%s delivery=%d seq=%d fallback=%v worker=%s output=%s last_error=%q}",
		st.Status, st.Attempts, st.Crashes, st.Dispatch, st.Delivery, st.Seq, st.Fallback, st.Worker, st.Output, st.LastError)
}

// endOf reads a run's end (nil while it runs).
func (f *fixture) endOf(id string) *checkpoint.End {
	f.t.Helper()
	e, _, err := f.store.End(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// Finding 1. A delivery whose record meets a CAS conflict and finds, on the re-read, that the
// node's dispatch is no longer its own is stale: it must not write its failure (or a short
// retry marked with its message) over the newer dispatch. Here, while delivery A's handler
// runs, the node moves on to a long wait (retrying, dispatch s1, its schedule published, as
// deferStep does); then A's handler fails retryably. The s1 schedule must run the step, the
// run complete, and no state of dispatch s1 carry A's error.
func TestFinding1StaleDeliveryAfterConflict(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	jitter := 0.0
	wf := workflow.New("stale")
	wf.Node("a", "work").WithRetry(workflow.Retry{MaxAttempts: 5, Initial: workflow.Duration(100 * time.Millisecond), Jitter: &jitter})
	f.apply(wf)
	const id = "finding1-stale"

	// Every state node a goes through, in order.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	kw, err := f.store.KV().Watch(watchCtx, workflow.NodeKey(id, "a"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var states []checkpoint.Node
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for e := range kw.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var st checkpoint.Node
			if json.Unmarshal(e.Value(), &st) == nil {
				mu.Lock()
				states = append(states, st)
				mu.Unlock()
			}
		}
	}()
	defer func() { _ = kw.Stop(); stopWatch(); <-watched }()

	const errA = "delivery A failed"
	inA, moved := make(chan struct{}), make(chan struct{})
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if runs.inc(s) == 1 {
				close(inA)
				select {
				case <-moved:
				case <-time.After(20 * time.Second):
				}
				return nil, errors.New(errA)
			}
			return "ok", nil
		})
	})
	if _, err := f.prod.Start(context.Background(), "stale", []byte(`{}`), producer.StartOptions{ID: id}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inA:
	case <-time.After(20 * time.Second):
		t.Fatal("delivery A's handler never ran")
	}
	// The node moves on while A runs: a long wait, dispatch s1, woken in 1 s.
	notBefore := time.Now().Add(time.Second).UTC()
	next := &checkpoint.Node{Status: checkpoint.StatusRetrying, Attempts: 1, Dispatch: workflow.DispatchSchedule(1), Sched: 1,
		NotBefore: notBefore, LastError: "moved on by another delivery"}
	if _, err := f.store.PutNode(context.Background(), id, "a", next, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Schedule(context.Background(), f.js, f.names, "work", f.rootEnvelope(id, "a", next.Dispatch), 1, notBefore); err != nil {
		t.Fatal(err)
	}
	close(moved)

	completed := within(20*time.Second, func() bool {
		e := f.endOf(id)
		return e != nil && e.Status == checkpoint.EndCompleted
	})
	if !completed {
		t.Errorf("run did not complete after the s1 schedule fired: end %+v, node a %s (stranded)", f.endOf(id), brief(f.node(id, "a")))
	}
	mu.Lock()
	for _, st := range states {
		if st.Dispatch == next.Dispatch && st.LastError == errA {
			t.Errorf("stale delivery A wrote its failure over dispatch %s: %s", next.Dispatch, brief(&st))
			break
		}
	}
	mu.Unlock()
	if completed && runs.get(id, "a") != 2 {
		t.Errorf("handler ran %d times, want 2 (A, then the s1 dispatch)", runs.get(id, "a"))
	}
}

// Finding 2. A crash suspect runs alone in its worker (the quarantine slot); when its handler
// ignores its timeout and is abandoned, the slot must be let go at that moment, as the claim
// and the step's slot are. Otherwise a poison step (a handler that blocks, ignoring its
// context) holds the slot for ever: its own next delivery waits behind it, heartbeating, and
// never reaches max_crashes and the DLQ, and every other crash suspect of the worker waits
// too.
func TestFinding2AbandonedCrashSuspect(t *testing.T) {
	t.Parallel()
	f := setup(t, "work") // ack wait 2 s
	const timeout = 200 * time.Millisecond
	poison := workflow.New("poison")
	poison.Node("a", "work").WithTimeout(timeout)
	f.apply(poison)
	victim := workflow.New("victim")
	victim.Node("a", "work").WithTimeout(timeout)
	f.apply(victim)

	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) }) // runs after the worker stopped: lets the abandoned handlers end
	var victimRuns atomic.Int32
	f.worker(Config{grace: 300 * time.Millisecond}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if s.Workflow == "poison" {
				<-unblock // ignores its context
				return "never", nil
			}
			if victimRuns.Add(1) == 1 {
				// Outlives its timeout and grace once (abandoned), then returns.
				select {
				case <-unblock:
				case <-time.After(1500 * time.Millisecond):
				}
				return "late", nil
			}
			return "ok", nil
		})
	})
	pid := f.start("poison", `{}`)
	// The poison step is a crash suspect running its handler: it holds the quarantine slot.
	natstest.Eventually(t, 20*time.Second, func() bool {
		st := f.node(pid, "a")
		return st != nil && st.Crashes >= 1 && st.Status == checkpoint.StatusRunning
	}, "the poison step never ran as a crash suspect")
	vid := f.start("victim", `{}`)

	want := fmt.Sprintf("worker crashed or timed out %d times on this step", workflow.DefaultMaxCrashes)
	var poisonEntry *dlq.Entry
	var victimEnd *checkpoint.End
	within(40*time.Second, func() bool {
		if poisonEntry == nil {
			entries, _ := dlq.List(context.Background(), f.js, f.names, dlq.Filter{RunID: pid})
			if len(entries) > 0 {
				poisonEntry = entries[0]
			}
		}
		if victimEnd == nil {
			victimEnd = f.endOf(vid)
		}
		return poisonEntry != nil && victimEnd != nil
	})
	if poisonEntry == nil {
		t.Errorf("the poison step never reached the DLQ (the quarantine slot was never let go): node %s", brief(f.node(pid, "a")))
	} else if poisonEntry.Reason != want {
		t.Errorf("poison DLQ reason %q, want %q", poisonEntry.Reason, want)
	}
	if victimEnd == nil || victimEnd.Status != checkpoint.EndCompleted {
		t.Errorf("the other crash suspect did not complete (blocked behind the abandoned one): end %+v, node %s", victimEnd, brief(f.node(vid, "a")))
	}
}

// Finding 6. An operator's cancel that loses to a failure writes cancel.<run>, finds the run
// failed, and takes its key back; a worker that skipped a queued step of the run while the key
// was there must not leave that branch dropped: after a replay of the dead node the run
// completes. Branch x dies; branch y waits in a long retry; the cancel key is written, seen by
// the worker, y's schedule fires, then the key is taken back and x replayed.
func TestFinding6CancelTakenBack(t *testing.T) {
	t.Parallel()
	f := setup(t, "xt", "yt", "pt")
	jitter := 0.0
	wf := workflow.New("branches")
	wf.Node("x", "xt")
	wf.Node("y", "yt").WithRetry(workflow.Retry{MaxAttempts: 3, Initial: workflow.Duration(4 * time.Second), Jitter: &jitter})
	f.apply(wf)
	probe := workflow.New("probe")
	probe.Node("p", "pt")
	f.apply(probe)

	var runs counter
	probeStarted, probeCancelled := make(chan string, 4), make(chan string, 4)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("xt", func(ctx context.Context, s *Step) (any, error) {
			if runs.inc(s) == 1 {
				return nil, Permanent(errors.New("x is broken"))
			}
			return "x", nil
		})
		w.Handle("yt", func(ctx context.Context, s *Step) (any, error) {
			if runs.inc(s) == 1 {
				return nil, errors.New("y flakes once")
			}
			return "y", nil
		})
		w.Handle("pt", func(ctx context.Context, s *Step) (any, error) {
			probeStarted <- s.RunID
			<-ctx.Done()
			probeCancelled <- s.RunID
			return nil, ctx.Err()
		})
	})
	// seen makes sure the worker's watch of cancel.* has applied every write before now: it
	// cancels a throwaway run through the real Cancel and waits for its running handler to be
	// cancelled (the watch reads cancel.* in order).
	seen := func(probeID string) {
		t.Helper()
		if _, err := f.prod.Start(context.Background(), "probe", nil, producer.StartOptions{ID: probeID}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-probeStarted:
			if got != probeID {
				t.Fatalf("probe %s started, want %s", got, probeID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("probe %s never ran", probeID)
		}
		if _, err := f.store.Cancel(context.Background(), probeID, "barrier"); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-probeCancelled:
			if got != probeID {
				t.Fatalf("probe %s cancelled, want %s", got, probeID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("probe %s: the worker never saw its cancel", probeID)
		}
	}

	const id = "finding6-taken-back"
	if _, err := f.prod.Start(context.Background(), "branches", []byte(`{}`), producer.StartOptions{ID: id}); err != nil {
		t.Fatal(err)
	}
	// x is dead and the run failed; y waits in its long retry (dispatch s1).
	natstest.Eventually(t, 20*time.Second, func() bool {
		e, y := f.endOf(id), f.node(id, "y")
		return e != nil && e.Status == checkpoint.EndFailed && y != nil && y.Status == checkpoint.StatusRetrying && y.Dispatch == "s1"
	}, "x did not fail with y parked")

	// The losing cancel: its key is written (and seen by the worker) while y's schedule fires.
	key := workflow.CancelKey(id)
	c, _ := json.Marshal(&checkpoint.Cancel{At: time.Now().UTC(), Reason: "operator"})
	rev, err := f.store.KV().Create(context.Background(), key, c)
	if err != nil {
		t.Fatal(err)
	}
	seen("finding6-probe-1")
	// y's scheduled step is delivered and dealt with (acked, or handed back and delivered again).
	natstest.Eventually(t, 20*time.Second, func() bool {
		info := f.consumerInfo("yt")
		return info.Delivered.Consumer >= 2 && info.NumAckPending == 0 || info.Delivered.Consumer >= 3
	}, "y's scheduled step was never delivered")
	// The cancel finds the run failed and takes its key back.
	if err := f.store.KV().Delete(context.Background(), key, jetstream.LastRevision(rev)); err != nil {
		t.Fatal(err)
	}
	seen("finding6-probe-2")

	entries := f.dlq(1)
	if _, err := dlq.Replay(context.Background(), f.js, f.store, f.names, entries[0].ID, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if !within(20*time.Second, func() bool {
		e := f.endOf(id)
		return e != nil && e.Status == checkpoint.EndCompleted
	}) {
		t.Fatalf("run did not complete after x's replay: end %+v, x %s, y %s (y dropped by the taken-back cancel)",
			f.endOf(id), brief(f.node(id, "x")), brief(f.node(id, "y")))
	}
	if st := f.node(id, "y"); st == nil || st.Status != checkpoint.StatusDone {
		t.Fatalf("y: %s, want done", brief(st))
	}
}

// Finding 7. A node dies (DLQ publish, CAS dead) and its delivery stops between the dead
// write and the run's failed end; the operator replays the node before that end exists, so
// the replay reopens nothing; then the old failed end is created late. When the replayed node
// completes and every node is done, the run must end completed, not keep the stale failed end.
func TestFinding7LateFailedEndAfterReplay(t *testing.T) {
	t.Parallel()
	for _, variant := range []string{"paused", "dead"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			f := setup(t, "work")
			wf := workflow.New("late")
			wf.Node("a", "work")
			f.apply(wf)
			var runs counter
			handler := func(ctx context.Context, s *Step) (any, error) {
				if runs.inc(s) == 1 {
					return nil, Permanent(errors.New("bad request"))
				}
				return "ok", nil
			}
			reached, resume := make(chan struct{}), make(chan struct{})
			var once atomic.Bool
			var nc1 atomic.Pointer[nats.Conn]
			_, nc, _ := f.worker(Config{hook: func(point string) bool {
				if point != pointDeadWritten || !once.CompareAndSwap(false, true) {
					return false
				}
				close(reached)
				if variant == "dead" {
					nc1.Load().Close()
					return true
				}
				// Paused (a GC pause, a slow disk) past the replay; then it writes the end.
				select {
				case <-resume:
				case <-time.After(30 * time.Second):
				}
				return false
			}}, func(w *Worker) { w.Handle("work", handler) })
			nc1.Store(nc)
			id := f.start("late", `{}`)
			select {
			case <-reached:
			case <-time.After(20 * time.Second):
				t.Fatal("the worker never reached dead-written")
			}
			entries := f.dlq(1)
			if _, err := dlq.Replay(context.Background(), f.js, f.store, f.names, entries[0].ID, dlq.ReplayOptions{}); err != nil {
				t.Fatal(err)
			}
			if variant == "dead" {
				// The old failed end, created late (the dying delivery's redelivery read the node
				// dead just before the replay).
				if _, err := f.store.CreateEnd(context.Background(), id, &checkpoint.End{Status: checkpoint.EndFailed, Reason: "node a: permanent error", At: time.Now().UTC()}); err != nil {
					t.Fatal(err)
				}
				f.worker(Config{}, func(w *Worker) { w.Handle("work", handler) })
			} else {
				close(resume)
			}
			natstest.Eventually(t, 30*time.Second, func() bool {
				st := f.node(id, "a")
				return st != nil && st.Status == checkpoint.StatusDone
			}, "the replayed node never completed")
			if !within(10*time.Second, func() bool {
				e := f.endOf(id)
				return e != nil && e.Status == checkpoint.EndCompleted
			}) {
				t.Fatalf("every node is done but the run's end is %+v, want completed", f.endOf(id))
			}
		})
	}
}

// Finding 8. A handler that ignores its context and returns success after the drain timeout,
// but within the grace, has its result recorded (the write must not use the cancelled work
// context): the node is done, the run completed, and no worker runs the handler again.
func TestFinding8DrainRecordsLateResult(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("drain8")
	wf.Node("a", "work")
	f.apply(wf)
	var runs counter
	started, shutdown := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	handler := func(ctx context.Context, s *Step) (any, error) {
		runs.inc(s)
		if first.CompareAndSwap(false, true) {
			close(started)
			select {
			case <-shutdown:
			case <-time.After(30 * time.Second):
			}
			time.Sleep(2 * time.Second) // ignores its context: past the drain timeout, within the grace
		}
		return "ok", nil
	}
	_, _, stop := f.startWorker(Config{DrainTimeout: time.Second, grace: 10 * time.Second}, func(w *Worker) { w.Handle("work", handler) })
	id := f.start("drain8", `{}`)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler never ran")
	}
	close(shutdown)
	stop() // returns once the handler returned and the step finished (within the grace)
	if st := f.node(id, "a"); st == nil || st.Status != checkpoint.StatusDone {
		t.Errorf("after the drain, node a is %s, want done: the late success was not recorded", brief(st))
	}
	f.worker(Config{}, func(w *Worker) { w.Handle("work", handler) })
	natstest.Eventually(t, 20*time.Second, func() bool { return f.consumerInfo("work").NumWaiting > 0 }, "the restarted worker never pulled")
	end := f.waitEnd(id, 20*time.Second)
	natstest.Eventually(t, 20*time.Second, func() bool { return f.pending("work") == 0 }, "steps left in the stream")
	if end.Status != checkpoint.EndCompleted || runs.get(id, "a") != 1 {
		t.Fatalf("run ended %s, handler ran %d times; want completed and 1", end.Status, runs.get(id, "a"))
	}
}

// Finding 9, crash count. The breaker gate runs after step 2's crash check: a redelivered step
// whose previous delivery crashed while marked running, arriving while its breaker key is
// open, still has its crash counted (the gate's deferral must not rewrite the state first).
func TestFinding9GateAfterCrashCount(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	jitter := 0.0
	wf := workflow.New("gate9")
	wf.Node("a", "work").WithRetry(workflow.Retry{MaxAttempts: 5, Initial: workflow.Duration(50 * time.Millisecond), Jitter: &jitter})
	const key = "gate9-dep"
	wf.Nodes[0].Breaker = &workflow.Breaker{Key: key, ConsecutiveFailures: 10, OpenFor: workflow.Duration(time.Second)}
	f.apply(wf)
	var calls atomic.Int32
	handler := func(ctx context.Context, s *Step) (any, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("flake") // a short retry: the redelivery marks the node running
		}
		return "ok", nil
	}
	var died atomic.Bool
	var nc1 atomic.Pointer[nats.Conn]
	_, nc, _ := f.worker(Config{hook: func(point string) bool {
		// The redelivery's handler returned; the worker dies before recording it.
		if point != pointHandlerDone || calls.Load() != 2 || !died.CompareAndSwap(false, true) {
			return false
		}
		nc1.Load().Close()
		return true
	}}, func(w *Worker) { w.Handle("work", handler) })
	nc1.Store(nc)
	id := f.start("gate9", `{}`)
	natstest.Eventually(t, 20*time.Second, died.Load, "the worker never died running the redelivery")
	if st := f.node(id, "a"); st == nil || st.Status != checkpoint.StatusRunning || st.Delivery != 2 {
		t.Fatalf("precondition: node a is %s, want running, delivery 2", brief(st))
	}
	// The dependency's breaker opens before the step comes back.
	f.openBreaker(key, time.Now().Add(6*time.Second))
	f.worker(Config{}, func(w *Worker) { w.Handle("work", handler) })
	if end := f.waitEnd(id, 40*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if st := f.node(id, "a"); st.Crashes != 1 {
		t.Fatalf("node a has %d crashes, want 1: the open breaker's deferral erased the crash of delivery 2 (%s)", st.Crashes, brief(st))
	}
}

// Finding 9, copies. The breaker gate runs after step 2's copy check: a second copy of a step
// in flight on another worker, arriving while the node's breaker is open, is acknowledged as
// a duplicate; it never runs the node's fallback beside the live step.
func TestFinding9GateAfterCopyCheck(t *testing.T) {
	t.Parallel()
	f := setup(t, "prim", "fb")
	jitter := 0.0
	wf := workflow.New("gate9b")
	wf.Node("a", "prim").WithRetry(workflow.Retry{MaxAttempts: 5, Initial: workflow.Duration(50 * time.Millisecond), Jitter: &jitter})
	const key = "gate9b-dep"
	wf.Nodes[0].Breaker = &workflow.Breaker{Key: key, ConsecutiveFailures: 10, OpenFor: workflow.Duration(time.Second)}
	wf.Nodes[0].Fallback = workflow.Fallback{"fb"}
	f.apply(wf)
	var calls, fallbacks atomic.Int32
	live, hold := make(chan struct{}), make(chan struct{})
	reg := func(w *Worker) {
		w.Handle("prim", func(ctx context.Context, s *Step) (any, error) {
			switch calls.Add(1) {
			case 1:
				return nil, errors.New("flake") // a short retry: the redelivery marks the node running
			case 2:
				close(live)
				select {
				case <-hold:
				case <-time.After(30 * time.Second):
				}
			}
			return "primary", nil
		})
		w.Handle("fb", func(ctx context.Context, s *Step) (any, error) {
			fallbacks.Add(1)
			return "fallback", nil
		})
	}
	_, _, stop1 := f.startWorker(Config{ID: "live-worker", Concurrency: 1, DrainTimeout: time.Minute}, reg)
	id := f.start("gate9b", `{}`)
	select {
	case <-live:
	case <-time.After(20 * time.Second):
		t.Fatal("the live step never ran")
	}
	if st := f.node(id, "a"); st == nil || st.Status != checkpoint.StatusRunning || st.Seq == 0 {
		t.Fatalf("precondition: node a is %s, want running and marked", brief(st))
	}
	f.openBreaker(key, time.Now().Add(time.Minute))
	// Worker 1 drains: it stops pulling, and its live step goes on.
	stopped := make(chan struct{})
	go func() { stop1(); close(stopped) }()
	natstest.Eventually(t, 10*time.Second, func() bool { return f.consumerInfo("prim").NumWaiting == 0 }, "worker 1 kept pulling")
	f.startWorker(Config{ID: "copy-worker"}, reg)
	f.publishCopy(id, "gate9b", "a", "prim", "gate9b-copy")
	// Worker 2 has dealt with the copy: it ran a fallback, or acked it.
	natstest.Eventually(t, 20*time.Second, func() bool {
		info := f.consumerInfo("prim")
		return fallbacks.Load() > 0 || info.Delivered.Consumer >= 3 && info.NumAckPending == 1 && info.NumPending == 0
	}, "the copy was never dealt with")
	close(hold)
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("worker 1 never finished its drain")
	}
	end := f.waitEnd(id, 20*time.Second)
	st := f.node(id, "a")
	if n := fallbacks.Load(); n != 0 || st.Fallback {
		t.Fatalf("the copy ran the fallback %d times beside the live step (node %s, run %s)", n, brief(st), end.Status)
	}
	if end.Status != checkpoint.EndCompleted || string(st.Output) != `"primary"` {
		t.Fatalf("run ended %s with output %s, want completed with the live step's output", end.Status, st.Output)
	}
}

// Finding 12. A definition read that misses (a registry replica lagging behind a workflow
// just applied) is retried, not turned into a malformed DLQ entry: the step runs once the
// definition is there, and the run completes with the DLQ empty.
func TestFinding12DefinitionReadMissRetried(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	wf := workflow.New("lagging")
	wf.Node("a", "work")
	if err := wf.Validate(workflow.ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	hash, err := wf.Hash()
	if err != nil {
		t.Fatal(err)
	}
	const id = "finding12-lagging"
	ctx := context.Background()
	if err := f.store.CreateRun(ctx, &checkpoint.Run{ID: id, Workflow: "lagging", Def: hash, Input: []byte(`{}`), Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	input, err := producer.EncodeNodeInput([]byte(`{}`), map[string]json.RawMessage{})
	if err != nil {
		t.Fatal(err)
	}
	env := &workflow.Envelope{RunID: id, Workflow: "lagging", Def: hash, Node: "a", Input: input, Dispatch: workflow.DispatchFirst}
	if _, err := producer.Publish(ctx, f.js, f.names, "work", env); err != nil {
		t.Fatal(err)
	}
	var runs counter
	f.worker(Config{}, func(w *Worker) {
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) { runs.inc(s); return "ok", nil })
	})
	natstest.Eventually(t, 10*time.Second, func() bool { return f.consumerInfo("work").Delivered.Consumer >= 1 }, "the step was never delivered")
	time.Sleep(1500 * time.Millisecond) // the lag: the definition reaches the registry 1.5 s after the step
	if _, _, err := f.store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	completed := within(20*time.Second, func() bool {
		e := f.endOf(id)
		return e != nil && e.Status == checkpoint.EndCompleted
	})
	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	if !completed || len(entries) != 0 {
		reasons := []string{}
		for _, e := range entries {
			reasons = append(reasons, e.Reason)
		}
		t.Fatalf("run end %+v, handler ran %d times, DLQ %q: want completed, once, and an empty DLQ", f.endOf(id), runs.get(id, "a"), reasons)
	}
}
