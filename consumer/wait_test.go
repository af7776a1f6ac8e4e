package consumer

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

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// approval applies draft (work) → approve (wait for signal approve) → publish (work).
func (f *fixture) approval(name, timeout, onTimeout string) {
	f.t.Helper()
	wf := workflow.New(name)
	wf.Node("draft", "work")
	with := map[string]any{"signal": "approve", "timeout": timeout}
	if onTimeout != "" {
		with["on_timeout"] = onTimeout
	}
	wf.Node("approve", workflow.WaitType, "draft").With = with
	wf.Node("publish", "work", "approve")
	f.apply(wf)
}

// waitWorker registers work (echo; draft first closes entered and blocks until release is
// closed, when they are set) and the engine-run wait type.
func waitWorker(runs *counter, release <-chan struct{}, entered ...chan struct{}) func(w *Worker) {
	return func(w *Worker) {
		w.Handle(workflow.WaitType, func(context.Context, *Step) (any, error) {
			return nil, Permanent(errors.New("a wait node runs no handler"))
		})
		w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
			if release != nil && s.Node == "draft" {
				for _, e := range entered {
					close(e)
				}
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return echo(runs)(ctx, s)
		})
	}
}

func (f *fixture) signal(run, name, data string) error {
	var raw json.RawMessage
	if data != "" {
		raw = json.RawMessage(data)
	}
	return SendSignal(context.Background(), f.js, f.store, f.names, run, name, raw)
}

func (f *fixture) waitStatus(run, node, status string) *checkpoint.Node {
	f.t.Helper()
	var st *checkpoint.Node
	natstest.Eventually(f.t, 30*time.Second, func() bool {
		st = f.node(run, node)
		return st != nil && st.Status == status
	}, "node %s of run %s never became %s", node, run, status)
	return st
}

// A signal sent while its node waits wakes it: the node is done with the data, the run goes
// on; a second signal of the name is refused, and so is a name nothing waits for.
func TestWaitSignalWakesTheNode(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	f.approval("approval", "1h", "")
	var runs counter
	f.worker(Config{}, waitWorker(&runs, nil))
	id := f.start("approval", `{}`)
	st := f.waitStatus(id, "approve", checkpoint.StatusWaiting)
	if st.Signal != "approve" || time.Until(st.NotBefore) < 50*time.Minute {
		t.Errorf("waiting state %+v: want signal approve and its timeout an hour away", st)
	}
	if err := f.signal(id, "reject", ""); !errors.Is(err, ErrUnknownSignal) {
		t.Errorf("a signal nothing waits for: %v, want ErrUnknownSignal", err)
	}
	if err := f.signal(id, "approve", `{"by": "ada"}`); err != nil {
		t.Fatal(err)
	}
	// The run may have completed already (publish is quick): then the run has ended.
	if err := f.signal(id, "approve", `{"by": "bob"}`); !errors.Is(err, ErrAlreadySignalled) && !errors.Is(err, ErrRunEnded) {
		t.Errorf("a second signal: %v, want ErrAlreadySignalled (or ErrRunEnded)", err)
	}
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if out := string(f.node(id, "approve").Output); out != `{"by":"ada"}` {
		t.Errorf("approve's output %s, want the first signal's data", out)
	}
	if n := runs.get(id, "publish"); n != 1 {
		t.Errorf("publish ran %d times, want 1", n)
	}
	if err := f.signal(id, "approve", ""); !errors.Is(err, ErrRunEnded) {
		t.Errorf("a signal to an ended run: %v, want ErrRunEnded", err)
	}
}

// A signal sent before its node is reached is kept, and consumed when the node arrives.
func TestWaitSignalBeforeTheNode(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	f.approval("approval", "1h", "")
	var runs counter
	release, entered := make(chan struct{}), make(chan struct{})
	f.worker(Config{}, waitWorker(&runs, release, entered))
	id := f.start("approval", `{}`)
	<-entered
	if err := f.signal(id, "approve", ""); err != nil {
		t.Fatal(err)
	}
	// The run is held at draft: a second signal of the name is refused as such.
	if err := f.signal(id, "approve", `"again"`); !errors.Is(err, ErrAlreadySignalled) {
		t.Errorf("a second signal: %v, want ErrAlreadySignalled", err)
	}
	close(release)
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if out := string(f.node(id, "approve").Output); out != "null" {
		t.Errorf("approve's output %s, want null (the signal had no data)", out)
	}
}

// At its timeout a wait node goes to the DLQ with the reason DESIGN.md names, or with
// on_timeout: skip is skipped and the run goes on.
func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	f.approval("strict", "1s", "")
	f.approval("lenient", "1s", "skip")
	var runs counter
	f.worker(Config{}, waitWorker(&runs, nil))
	strict, lenient := f.start("strict", `{}`), f.start("lenient", `{}`)
	end := f.waitEnd(strict, 30*time.Second)
	if end.Status != checkpoint.EndFailed || end.Reason != "node approve: timed out waiting for signal approve" {
		t.Errorf("strict run ended %s (%q)", end.Status, end.Reason)
	}
	entries, err := dlq.List(context.Background(), f.js, f.names, dlq.Filter{RunID: strict})
	if err != nil || len(entries) != 1 || entries[0].Reason != "timed out waiting for signal approve" {
		t.Errorf("DLQ %v, %v: want one entry timed out waiting for signal approve", entries, err)
	}
	if end := f.waitEnd(lenient, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Errorf("lenient run ended %s (%s), want completed", end.Status, end.Reason)
	}
	f.mustStatus(lenient, "approve", checkpoint.StatusSkipped)
	if runs.get(strict, "publish") != 0 {
		t.Error("publish ran after a failed wait")
	}
}

// A signal racing the timeout gives exactly one outcome, 200 times over: either the signal
// is accepted and the node is done with its data, or it is refused and the node timed out.
func TestWaitSignalRacesTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	f.approval("race", "1s", "")
	var runs counter
	f.worker(Config{Concurrency: 64}, waitWorker(&runs, nil))
	const n = 200
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.start("race", `{}`)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Poll without failing from this goroutine: under load the node may wait and
			// time out between two looks; then the signal goes at once (and must be refused).
			var st *checkpoint.Node
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				s, _, err := f.store.Node(context.Background(), id, "approve")
				if err == nil && s != nil && (s.Status == checkpoint.StatusWaiting || s.Final()) {
					st = s
					break
				}
			}
			if st != nil && st.Status == checkpoint.StatusWaiting {
				// Aim at the timeout: spread over its last 300 ms and the 300 after.
				time.Sleep(time.Until(st.NotBefore.Add(time.Duration(i%60-30) * 10 * time.Millisecond)))
			}
			errs[i] = f.signal(id, "approve", fmt.Sprintf(`{"i": %d}`, i))
		}()
	}
	wg.Wait()
	signalled, timedOut := 0, 0
	for i, id := range ids {
		end := f.waitEnd(id, 30*time.Second)
		st := f.node(id, "approve")
		switch {
		case errs[i] == nil:
			signalled++
			if st.Status != checkpoint.StatusDone || string(st.Output) != fmt.Sprintf(`{"i":%d}`, i) || end.Status != checkpoint.EndCompleted {
				t.Errorf("run %d: the signal was accepted but the node is %s (%s; %s), the run %s (%s)", i, st.Status, st.Output, st.Reason, end.Status, end.Reason)
			}
		case errors.Is(errs[i], ErrSignalTimedOut) || errors.Is(errs[i], ErrRunEnded):
			timedOut++
			if st.Status != checkpoint.StatusDead || end.Status != checkpoint.EndFailed {
				t.Errorf("run %d: the signal was refused (%v) but the node is %s, the run %s", i, errs[i], st.Status, end.Status)
			}
		default:
			t.Errorf("run %d: signal: %v", i, errs[i])
		}
		if runs.get(id, "publish") > 1 {
			t.Errorf("run %d: publish ran twice", i)
		}
	}
	t.Logf("%d signalled, %d timed out", signalled, timedOut)
}

// Waiting nodes hold no worker slot: with 10,000 runs parked in wait nodes (500 with
// -short), a worker with two slots still runs other work at once, and no wait step holds an
// ack-pending slot.
func TestWaitHoldsNoSlot(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	f.approval("park", "1h", "")
	other := workflow.New("other")
	other.Node("x", "work")
	f.apply(other)
	var runs counter
	f.worker(Config{Concurrency: 2}, waitWorker(&runs, nil))
	parked := 10_000
	if testing.Short() {
		parked = 500
	}
	var ids []string
	for range parked {
		ids = append(ids, f.start("park", `{}`))
	}
	natstest.Eventually(t, 5*time.Minute, func() bool {
		st := f.node(ids[len(ids)-1], "approve")
		return st != nil && st.Status == checkpoint.StatusWaiting
	}, "the parked runs never reached their wait node")
	waiting := 0
	for _, id := range ids {
		if st := f.node(id, "approve"); st != nil && st.Status == checkpoint.StatusWaiting {
			waiting++
		}
	}
	if waiting < parked*99/100 {
		t.Fatalf("%d of %d runs waiting, want (nearly) all before the other work starts", waiting, parked)
	}
	for range 5 {
		if end := f.waitEnd(f.start("other", `{}`), 30*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("other work ended %s beside %d waiting runs", end.Status, parked)
		}
	}
	info, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer(workflow.WaitType))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := info.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending != 0 {
		t.Errorf("%d wait steps hold ack-pending slots, want 0", ci.NumAckPending)
	}
}

// A worker killed at each gap of a wait node — after marking it waiting, after scheduling
// its timeout — loses nothing: another worker finds the node, the signal wakes it, the run
// completes once. A signaller that died between recording its signal and waking the node
// (the signal is written, no wake published) is caught by the timeout, which finds the
// signal and completes the node with it.
func TestWaitCrashPoints(t *testing.T) {
	t.Parallel()
	for _, point := range []string{pointWaitParked, pointWaitSched} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			f := setup(t, "work", workflow.WaitType)
			f.approval("approval", "1h", "")
			var runs counter
			var died atomic.Bool
			var nc1 *nats.Conn
			_, nc1, _ = f.worker(Config{hook: func(p string) bool {
				if p != point || !died.CompareAndSwap(false, true) {
					return false
				}
				nc1.Close()
				return true
			}}, waitWorker(&runs, nil))
			id := f.start("approval", `{}`)
			natstest.Eventually(t, 20*time.Second, died.Load, "worker never reached %s", point)
			f.worker(Config{}, waitWorker(&runs, nil))
			f.waitStatus(id, "approve", checkpoint.StatusWaiting)
			if err := f.signal(id, "approve", `"yes"`); err != nil {
				t.Fatal(err)
			}
			if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
				t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
			}
			if n := runs.get(id, "publish"); n != 1 {
				t.Errorf("publish ran %d times, want 1", n)
			}
		})
	}
	t.Run("signal-written", func(t *testing.T) {
		t.Parallel()
		f := setup(t, "work", workflow.WaitType)
		f.approval("approval", "1h", "")
		var runs counter
		f.worker(Config{}, waitWorker(&runs, nil))
		id := f.start("approval", `{}`)
		f.waitStatus(id, "approve", checkpoint.StatusWaiting)
		// What SendSignal writes before it wakes the node, and nothing after.
		if _, _, err := f.store.PutSignal(context.Background(), id, "approve", &checkpoint.Signal{Data: json.RawMessage(`"late"`)}); err != nil {
			t.Fatal(err)
		}
		if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run ended %s (%s), want completed by the signal the workers' watch found", end.Status, end.Reason)
		}
		if out := string(f.node(id, "approve").Output); out != `"late"` {
			t.Errorf("approve's output %s", out)
		}
	})
}

// A signal to a run that does not exist is refused as unknown (after the few seconds a start
// request may take to be recorded).
func TestSignalUnknownRun(t *testing.T) {
	t.Parallel()
	f := setup(t, "work", workflow.WaitType)
	if err := f.signal("no-such-run", "approve", ""); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("signal to an unknown run: %v, want ErrNotFound", err)
	}
	if err := f.signal("bad id!", "approve", ""); !errors.Is(err, checkpoint.ErrNotFound) || !strings.Contains(err.Error(), "not a run ID") {
		t.Errorf("signal to a malformed run ID: %v", err)
	}
}
