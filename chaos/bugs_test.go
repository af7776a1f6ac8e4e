//go:build (chaos || chaosquick) && linux

package chaos

// Minimal reproductions of the jetflow bugs the chaos suite found (RELIABILITY.md,
// "Findings"). Each fails until its bug is fixed; then it guards the fix.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// waitFor polls cond every 50 ms until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeState reads node.<run>.<node> from the runs bucket.
func (r *rig) nodeState(run, node string) *checkpoint.Node {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	e, err := r.kv.Get(ctx, workflow.NodeKey(run, node))
	if err != nil {
		r.t.Fatalf("node %s.%s: %v", run, node, err)
	}
	var st checkpoint.Node
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		r.t.Fatal(err)
	}
	return &st
}

// waitEnd waits for the run's end.
func (r *rig) waitEnd(run string, timeout time.Duration) {
	r.t.Helper()
	waitFor(r.t, timeout, func() bool {
		_, err := r.kv.Get(r.ctx, workflow.EndKey(run))
		return err == nil
	}, "run %s did not end", run)
}

// ledgerStarts returns the ledger's start events of node whose worker is ppid (any: 0).
func (r *rig) ledgerStarts(node string, ppid int) []event {
	evs, _ := readLedger(r.ledger)
	var out []event
	for _, e := range evs {
		if e.ev == evStart && e.node == node && (ppid == 0 || e.ppid == ppid) {
			out = append(out, e)
		}
	}
	return out
}

// TestBugSetupTypeScalesClusterToR1: on a 3-node cluster set up at R3, `jetflow setup
// --type T …` run without --replicas (to tune one node type's consumer) puts every stream,
// bucket and consumer back to one replica, and prints "up to date" for each.
func TestBugSetupTypeScalesClusterToR1(t *testing.T) {
	r := newRig(t, "bug-setup-r1", rigOptions{cluster: true}) // setup --replicas 3: R3
	out := r.retryCLI(60*time.Second, "setup", "--type", "noop", "--max-ack-pending", "50")
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	for _, name := range []string{r.names.StepsStream(), "KV_" + r.names.RunsBucket()} {
		s, err := r.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().Config.Replicas; n != 3 {
			t.Errorf("%s has %d replica(s) after `setup --type noop --max-ack-pending 50` on an R3 install, want 3; setup said:\n%s", name, n, out)
		}
	}
}

// TestBugSetupResetsAckWait: `jetflow setup` run again without --type (after an upgrade,
// say) puts the ack wait an operator gave a type with `setup --type exec --ack-wait 2s`
// back to 30 s, and prints "up to date".
func TestBugSetupResetsAckWait(t *testing.T) {
	r := newRig(t, "bug-setup-ackwait", rigOptions{}) // setup --type exec --ack-wait 2s
	out := r.retryCLI(60*time.Second, "setup")
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	c, err := r.js.Consumer(ctx, r.names.StepsStream(), r.names.Consumer("exec"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.AckWait; got != ackWait {
		t.Errorf("exec consumer ack wait is %s after a plain `setup`, want the %s it was given; setup said:\n%s", got, ackWait, out)
	}
}

// TestBugDuplicateCountedAsCrash: a second copy of a step (same envelope, another
// Nats-Msg-Id) delivered while the node is `running` on a redelivery is taken for a crash
// (step 2 compares the copy's delivery count, 1, with the running marker's, 2): `crashes`
// goes up, and the handler runs a second time, at once, beside the live one. Enough such
// copies send a healthy node to the DLQ as "worker crashed or timed out N times".
func TestBugDuplicateCountedAsCrash(t *testing.T) {
	r := newRig(t, "bug-dup-crash", rigOptions{})
	// A long ack wait: nothing in this test may be redelivered for want of an ack.
	r.retryCLI(60*time.Second, "setup", "--type", "exec", "--ack-wait", "60s")
	r.applyWorkflow("dup", node{name: "b", retry: "{max_attempts: 3, initial: 100ms, jitter: 0}",
		env: map[string]string{"FAIL_FIRST": "1", "SLEEP": "6"}})
	steps := make(chan *nats.Msg, 16)
	sub, err := r.nc.ChanSubscribe(r.names.StepSubject("exec", "dup", "b"), steps)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	a, err := r.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	r.retryCLI(30*time.Second, "start", "dup", "--id", "run1")
	var original *nats.Msg
	select {
	case original = <-steps:
	case <-time.After(30 * time.Second):
		t.Fatal("the step was never published")
	}
	// Attempt 1 fails; its redelivery (delivery 2) marks the node running and runs attempt 2.
	waitFor(t, 30*time.Second, func() bool { return len(r.ledgerStarts("b", a.pid())) == 2 }, "attempt 2 did not start on worker A")
	if st := r.nodeState("run1", "b"); st.Status != checkpoint.StatusRunning || st.Delivery != 2 {
		t.Fatalf("node b should be running on delivery 2: %+v", st)
	}
	// Let worker B take the copy: stop A (for a few seconds of the 60 s ack wait) until its
	// pull requests have expired, so the server has only B's to deliver to.
	a.signal(syscall.SIGSTOP)
	cons, err := r.js.Consumer(r.ctx, r.names.StepsStream(), r.names.Consumer("exec"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		info, err := cons.Info(r.ctx)
		return err == nil && info.NumWaiting == 0
	}, "worker A's pull requests did not expire")
	b, err := r.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(b.tail(64<<10), "worker started") }, "worker B did not start")
	dup := &nats.Msg{Subject: original.Subject, Header: nats.Header{}, Data: original.Data}
	for k, v := range original.Header {
		dup.Header[k] = v
	}
	dup.Header.Set(nats.MsgIdHdr, "a-second-copy")
	ack, err := r.js.PublishMsg(r.ctx, dup)
	if err != nil {
		t.Fatal(err)
	}
	// B takes the copy: it runs it, or acks it (the work queue then deletes it).
	stream, err := r.js.Stream(r.ctx, r.names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool {
		if len(r.ledgerStarts("b", b.pid())) > 0 {
			return true
		}
		_, err := stream.GetMsg(r.ctx, ack.Sequence)
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}, "worker B did not take the copy")
	a.signal(syscall.SIGCONT)
	r.waitEnd("run1", 60*time.Second)

	st := r.nodeState("run1", "b")
	var runs []string
	for _, e := range r.ledgerStarts("b", 0) {
		runs = append(runs, fmt.Sprintf("attempt %d on worker %d at %s", e.attempt, e.ppid, e.at.Format("15:04:05.000")))
	}
	if st.Crashes != 0 {
		t.Errorf("node b: crashes = %d, but no worker crashed or timed out (A was stopped for seconds of a 60 s ack wait); the handler ran: %s",
			st.Crashes, strings.Join(runs, "; "))
	}
	if len(runs) != 2 {
		t.Errorf("the copy ran the handler beside the live run: %s", strings.Join(runs, "; "))
	}
}

// TestBugFirstDeliveryCrashNotCounted: a worker killed while it runs a step's first delivery
// leaves no trace in the node state (step 2 writes `running` only on a redelivery), so the
// handler's re-run on the next delivery was counted neither in `crashes` nor in
// jetflow_step_reruns_total, against DESIGN.md's "each such re-run is counted". Fixed: every
// deliberate hand-back marks the node state with its message, so a redelivery of a message
// the state holds no mark of follows a crash or a timeout, and is counted.
func TestBugFirstDeliveryCrashNotCounted(t *testing.T) {
	r := newRig(t, "bug-first-crash", rigOptions{})
	r.applyWorkflow("slow", node{name: "s", env: map[string]string{"SLEEP": "3"}})
	a, err := r.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	r.retryCLI(30*time.Second, "start", "slow", "--id", "run1")
	waitFor(t, 30*time.Second, func() bool { return len(r.ledgerStarts("s", a.pid())) == 1 }, "the step did not start on worker A")
	r.killWorker(a)
	if _, err := r.startWorker(); err != nil {
		t.Fatal(err)
	}
	r.waitEnd("run1", 60*time.Second)
	st := r.nodeState("run1", "s")
	if n := len(r.ledgerStarts("s", 0)); n != 2 {
		t.Fatalf("the handler ran %d times, want 2 (killed, then finished)", n)
	}
	if st.Crashes != 1 {
		t.Errorf("node s: crashes = %d after its handler was re-run because its worker was SIGKILLed mid-run, want 1", st.Crashes)
	}
}

// TestBugExecChildOutlivesWorker: when a worker dies, what an exec node started must die
// with it — nodes/nodes.go: "a crashed worker leaves no handler running beside the retry".
// Pdeathsig reaches only the direct child, so a killed handler's children went on and did
// their side effects after their worker died, beside the re-run on another worker. The fix
// in d0fabf0 (a `trap 'kill -KILL 0' TERM` before a shell line, Pdeathsig SIGTERM) covers a
// shell line whose own commands are the side effect; a program given as a list of
// arguments now runs under the same shell guard. The cases:
//   - argv: command given as a list of arguments: its children must die with the worker;
//   - shell: a shell line that runs a script: the shell defers its trap until its foreground
//     command ends, so the whole script still runs to its end;
//   - ignores-TERM: a program that ignores SIGTERM now outlives its worker altogether
//     (Pdeathsig used to be SIGKILL).
func TestBugExecChildOutlivesWorker(t *testing.T) {
	for _, tc := range []struct {
		name string
		node node
	}{
		{"argv", node{name: "e", env: map[string]string{"EFFECT": "1", "SLEEP": "3"}}},
		{"shell", node{name: "e", shell: true, env: map[string]string{"EFFECT": "1", "SLEEP": "3"}}},
		{"ignores-TERM", node{name: "e", timeout: "2s", env: map[string]string{"HANG_FIRST": "1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "bug-exec-orphan-"+tc.name, rigOptions{})
			r.applyWorkflow("effect", tc.node)
			a, err := r.startWorker()
			if err != nil {
				t.Fatal(err)
			}
			r.retryCLI(30*time.Second, "start", "effect", "--id", "run1")
			// (A shell line's script has the wrapping shell for $PPID, not the worker.)
			waitFor(t, 30*time.Second, func() bool { return len(r.ledgerStarts("e", 0)) == 1 }, "the step did not start on worker A")
			killed := r.ledgerStarts("e", 0)[0]
			r.killWorker(a)
			diedAt := time.Now()
			if tc.name == "ignores-TERM" {
				time.Sleep(2 * time.Second)
				if syscall.Kill(killed.pid, 0) == nil {
					t.Errorf("the handler (pid %d) still runs %s after its worker was SIGKILLed: it ignores SIGTERM", killed.pid, time.Since(diedAt).Round(time.Millisecond))
				}
				return
			}
			if _, err := r.startWorker(); err != nil {
				t.Fatal(err)
			}
			r.waitEnd("run1", 60*time.Second)
			time.Sleep(4 * time.Second) // longer than the handler's sleep: let an orphan finish
			evs, _ := readLedger(r.ledger)
			for _, e := range evs {
				if e.ev == evEffect && e.pid == killed.pid {
					t.Errorf("the handler whose worker was SIGKILLed at %s did its side effect at %s, %s after its worker died (its re-run started at %s)",
						diedAt.Format("15:04:05.000"), e.at.Format("15:04:05.000"), e.at.Sub(diedAt).Round(time.Millisecond), r.ledgerStarts("e", 0)[1].at.Format("15:04:05.000"))
				}
			}
		})
	}
}

// TestBrokerForgetsConsumedStepIDsOnRestart checks a premise, not a jetflow bug: after a
// nats-server restart (a clean one), the steps stream's duplicate window no longer knows
// the Nats-Msg-Ids of steps already consumed (the server rebuilds it from the messages it
// still stores, and a work queue deletes what was acked). So a fan-out re-published after
// a restart — a parent redelivered because its ack was lost — stores a second copy of the
// child within the 10-minute window, and step 2 meets a copy (see
// TestBugDuplicateCountedAsCrash). It passes while the broker behaves so.
func TestBrokerForgetsConsumedStepIDsOnRestart(t *testing.T) {
	r := newRig(t, "premise-dedup", rigOptions{})
	ctx := r.ctx
	publish := func() bool {
		m := &nats.Msg{Subject: r.names.StepSubject("exec", "wf", "n"), Header: nats.Header{}, Data: []byte("{}")}
		m.Header.Set(nats.MsgIdHdr, "run1.n")
		ack, err := r.js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Duplicate
	}
	consume := func() {
		c, err := r.js.Consumer(ctx, r.names.StepsStream(), r.names.Consumer("exec"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if publish() {
		t.Fatal("the first publish is a duplicate")
	}
	consume()
	if !publish() {
		t.Fatal("a second publish of a consumed step within the window is stored again, before any restart")
	}
	p := r.servers[0].proc()
	p.stop(20 * time.Second)
	if err := r.servers[0].start(); err != nil {
		t.Fatal(err)
	}
	if err := r.servers[0].waitListening(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	dup := false
	waitFor(t, 30*time.Second, func() bool {
		m := &nats.Msg{Subject: r.names.StepSubject("exec", "wf", "n"), Header: nats.Header{}, Data: []byte("{}")}
		m.Header.Set(nats.MsgIdHdr, "run1.n")
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ack, err := r.js.PublishMsg(actx, m)
		if err == nil {
			dup = ack.Duplicate
		}
		return err == nil
	}, "publish after the restart")
	if dup {
		t.Fatal("premise changed: after a restart the broker still knows the ID of a consumed step (the duplicate window survives); TestBugDuplicateCountedAsCrash matters less")
	}
}
