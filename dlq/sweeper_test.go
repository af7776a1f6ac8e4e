package dlq_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// poison is a run whose only step reached its consumer's MaxDeliver (2) without a result, so
// the server has published a MAX_DELIVERIES advisory into the advisory stream for a sweeper.
type poison struct {
	*fixture
	run string
	seq uint64 // the step's sequence in the steps stream
}

// lastError is the error the poison node recorded before its worker started crashing.
const lastError = "upstream said 500\nbody: boom"

func setupPoison(t *testing.T) *poison {
	t.Helper()
	f := setup(t)
	ctx := context.Background()
	if err := jsetup.EnsureConsumer(ctx, f.js, f.names, jsetup.ConsumerConfig{Type: "poison", AckWait: time.Second, MaxDeliver: 2}, true, 1, nil); err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("doomed")
	wf.Node("p", "poison")
	f.apply(wf)
	run := f.start("doomed", `{}`)
	// The node failed once for real, then its worker crashed on every delivery.
	if _, err := f.store.PutNode(ctx, run, "p", &checkpoint.Node{Status: checkpoint.StatusRunning, Attempts: 1, LastError: lastError, Dispatch: workflow.DispatchFirst}, 0); err != nil {
		t.Fatal(err)
	}
	cons, err := f.js.Consumer(ctx, f.names.StepsStream(), f.names.Consumer("poison"))
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	for range 2 { // take the step and never answer, twice
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seq = md.Sequence.Stream
	}
	// The server notices MaxDeliver when it would deliver the step again.
	if msg, err := cons.Next(jetstream.FetchMaxWait(3 * time.Second)); err == nil {
		t.Fatalf("the step was delivered a third time: %s", msg.Subject())
	}
	return &poison{fixture: f, run: run, seq: seq}
}

// sweeper runs a sweeper with hook until the test ends.
func (p *poison) sweeper(hook func(point string) bool) {
	s := dlq.NewSweeper(p.js, p.store, p.names, "sweeper-1", nil)
	dlq.SetHook(s, hook)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	p.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("sweeper: %v", err)
		}
	})
}

// stepThere reports whether the poison step is still in the steps stream.
func (p *poison) stepThere() bool {
	s, err := p.js.Stream(context.Background(), p.names.StepsStream())
	if err != nil {
		p.t.Fatal(err)
	}
	_, err = s.GetMsg(context.Background(), p.seq)
	return err == nil
}

// checkSwept waits for the sweep to finish and checks what it left: one DLQ entry that keeps
// the node's attempts and real last error, the node dead at that entry, the run failed, the
// step gone and the advisory acked.
func (p *poison) checkSwept() {
	t := p.t
	t.Helper()
	ctx := context.Background()
	reason := "delivered 2 times without finishing (worker crash or timeout)"
	p.waitEnd(p.run, checkpoint.EndFailed)
	natstest.Eventually(t, 20*time.Second, func() bool {
		c, err := p.js.Consumer(ctx, p.names.AdvisoryStream(), p.names.SweeperConsumer())
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream > 0
	}, "the advisory was not acked")
	e := p.entries(1)[0]
	if e.RunID != p.run || e.Node != "p" || e.Reason != reason || e.Attempts != 1 || e.Deliveries != 2 || e.Error != workflow.OneLine(lastError, 4096) {
		t.Errorf("DLQ entry %+v", e)
	}
	st := p.node(p.run, "p")
	if st.Status != checkpoint.StatusDead || st.DLQSeq != e.ID || st.LastError != lastError || st.Reason != reason || st.Attempts != 1 {
		t.Errorf("node state %+v", st)
	}
	if p.stepThere() {
		t.Error("the poison step is still in the steps stream")
	}
}

// TestSweeperKilledAtEachGap stops the sweeper dead at each gap between its writes; the
// advisory comes back and the next sweep finishes the job, with exactly one DLQ entry.
func TestSweeperKilledAtEachGap(t *testing.T) {
	t.Parallel()
	for _, point := range []string{dlq.PointSweepPublished, dlq.PointSweepDead, dlq.PointSweepEnded, dlq.PointSweepDeleted} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			p := setupPoison(t)
			var stopped atomic.Bool
			p.sweeper(func(at string) bool { return at == point && stopped.CompareAndSwap(false, true) })
			natstest.Eventually(t, 20*time.Second, stopped.Load, "the sweeper never reached %s", point)
			p.checkSwept()
		})
	}
}

// TestSweeperCASConflicts: when every CAS of a sweep conflicts, the sweep gives up without
// ending the run or deleting the step (the node is not dead), and the advisory's redelivery
// finishes it.
func TestSweeperCASConflicts(t *testing.T) {
	t.Parallel()
	p := setupPoison(t)
	ctx := context.Background()
	var (
		calls    atomic.Int32
		gaveUp   = make(chan string, 1) // what the first sweep left, seen by the second
		conflict = int32(checkpoint.MaxCASRetries)
	)
	p.sweeper(func(at string) bool {
		if at != dlq.PointSweepPublished {
			return false
		}
		n := calls.Add(1)
		if n <= conflict {
			// Someone else writes the node between the sweeper's read and its CAS.
			st, rev, err := p.store.Node(ctx, p.run, "p")
			if err == nil {
				_, err = p.store.PutNode(ctx, p.run, "p", st, rev)
			}
			if err != nil {
				t.Errorf("bump the node: %v", err)
			}
			return false
		}
		if n == conflict+1 {
			st, _, _ := p.store.Node(ctx, p.run, "p")
			end, _, _ := p.store.End(ctx, p.run)
			gaveUp <- fmt.Sprintf("node %s, end %v, step there %v", st.Status, end != nil, p.stepThere())
		}
		return false
	})
	select {
	case got := <-gaveUp:
		if want := "node running, end false, step there true"; got != want {
			t.Errorf("after a sweep whose CASes all conflicted: %s, want %s", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the advisory did not come back after the sweep gave up")
	}
	p.checkSwept()
}
