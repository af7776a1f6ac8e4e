package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Crash points of a wait node (tests stop a worker dead at them).
const (
	pointWaitParked = "wait-parked" // after the node's waiting state, before its timeout is scheduled
	pointWaitSched  = "wait-sched"  // after its timeout is scheduled, before the step is acked
)

// startWait is a wait node's first step: a signal already sent makes the node done at once;
// otherwise the node is marked waiting, with its timeout scheduled (the schedule path: it
// holds no worker slot and no ack-pending slot), and the step is acked. The signal's sender
// wakes it; so does the timeout.
func (s *stepRun) startWait(ctx context.Context) error {
	name, timeout, _ := s.node.WaitSettings()
	sig, err := s.w.store.ReadSignal(s.ops(ctx), s.env.RunID, name)
	if err != nil {
		return err
	}
	if sig != nil {
		return s.waitOutcome(ctx, sig)
	}
	next := s.next().Scheduled(time.Now().Add(timeout))
	next.Status, next.Signal, next.Worker, next.StartedAt = checkpoint.StatusWaiting, name, s.w.cfg.ID, time.Now().UTC()
	if len(next.Input) == 0 {
		next.Input = s.env.Input // the wake carries no input: a replay of the node finds it here
	}
	if err := s.write(ctx, next); err != nil {
		return err
	}
	if s.w.at(pointWaitParked) {
		return errDead
	}
	return s.waitWake(ctx)
}

// waitWake looks at a waiting wait node: its signal sent, the node is done with the data;
// its timeout due, the timeout is claimed (only if no signal came first) and the node fails
// or is skipped; otherwise its timeout is scheduled again (deduplicated) and the step acked.
func (s *stepRun) waitWake(ctx context.Context) error {
	st := s.cur.st
	sig, err := s.w.store.ReadSignal(s.ops(ctx), s.env.RunID, st.Signal)
	if err != nil {
		return err
	}
	if sig == nil && !time.Now().Before(st.NotBefore) {
		// Due: the timeout and a signal race for the one key; whichever is created first is
		// the outcome.
		if sig, _, err = s.w.store.PutSignal(s.ops(ctx), s.env.RunID, st.Signal, &checkpoint.Signal{TimedOut: true}); err != nil {
			return err
		}
	}
	if sig != nil {
		return s.waitOutcome(ctx, sig)
	}
	if err := s.scheduleWaitTimeout(ctx, st); err != nil {
		return err
	}
	if s.w.at(pointWaitSched) {
		return errDead
	}
	return s.msg.Ack()
}

// scheduleWaitTimeout publishes a waiting node's timeout to its schedule subject; a copy of
// one already published is deduplicated or replaces it.
func (s *stepRun) scheduleWaitTimeout(ctx context.Context, st *checkpoint.Node) error {
	env := *s.env
	env.Dispatch, env.Input = st.Dispatch, nil
	_, err := producer.Schedule(s.ops(ctx), s.w.js, s.w.cfg.Names, s.node.Type, &env, st.Sched, st.NotBefore)
	return err
}

// waitOutcome ends a wait node: done with the signal's data, or its timeout's outcome.
func (s *stepRun) waitOutcome(ctx context.Context, sig *checkpoint.Signal) error {
	name, _, skip := s.node.WaitSettings()
	a := checkpoint.Attempt{Number: attemptsOf(s.cur.st) + 1, Worker: s.w.cfg.ID, StartedAt: time.Now().UTC()}
	if st := s.cur.st; st != nil && !st.StartedAt.IsZero() {
		a.StartedAt = st.StartedAt
	}
	if !sig.TimedOut {
		out := sig.Data
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		return s.done(ctx, a, out, false)
	}
	if skip {
		return s.skip(ctx)
	}
	reason := "timed out waiting for signal " + name
	return s.deadLetter(ctx, s.next().Started(a), a.Number, reason, reason)
}

// Errors of SendSignal.
var (
	// ErrAlreadySignalled: the run was sent this signal before; the first one stands.
	ErrAlreadySignalled = errors.New("already signalled")
	// ErrSignalTimedOut: the node waiting for the signal timed out first.
	ErrSignalTimedOut = errors.New("the node waiting for it already timed out")
	// ErrRunEnded: the run has ended.
	ErrRunEnded = errors.New("the run has ended")
	// ErrUnknownSignal: no wait node of the run's workflow waits for this signal.
	ErrUnknownSignal = errors.New("no wait node of the run waits for this signal")
)

// signalRecordWait is how long SendSignal waits for a run's record (a start request not yet
// taken by a worker) before calling the run unknown.
const signalRecordWait = 5 * time.Second

// SendSignal sends signal name with data (nil: null) to run: it is recorded, then every
// wait node of the run waiting for it is woken. A signal sent before its node is reached is
// kept and consumed when the node arrives. It fails with checkpoint.ErrNotFound for an
// unknown run, ErrRunEnded, ErrUnknownSignal, ErrAlreadySignalled or ErrSignalTimedOut.
func SendSignal(ctx context.Context, js jetstream.JetStream, store *checkpoint.Store, names workflow.Names, run, name string, data json.RawMessage) error {
	if !workflow.ValidRunID(run) {
		return fmt.Errorf("%w: %q is not a run ID", checkpoint.ErrNotFound, workflow.OneLine(run, 80))
	}
	if !workflow.ValidName(name) {
		return fmt.Errorf("%w: %q is not a signal name", ErrUnknownSignal, workflow.OneLine(name, 80))
	}
	wctx, cancel := context.WithTimeout(ctx, signalRecordWait)
	rec, err := store.WaitRun(wctx, run)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("%w: no run %s", checkpoint.ErrNotFound, run)
		}
		return err
	}
	if end, _, err := store.End(ctx, run); err != nil {
		return err
	} else if end != nil {
		return fmt.Errorf("%w (%s)", ErrRunEnded, end.Status)
	}
	def, err := store.Definition(ctx, rec.Def)
	if err != nil {
		return err
	}
	var waiting []*workflow.Node
	for _, n := range def.Nodes {
		if sig, _, _ := n.WaitSettings(); n.Type == workflow.WaitType && sig == name {
			waiting = append(waiting, n)
		}
	}
	if len(waiting) == 0 {
		return fmt.Errorf("%w: %s (workflow %s)", ErrUnknownSignal, name, rec.Workflow)
	}
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	got, wrote, err := store.PutSignal(ctx, run, name, &checkpoint.Signal{Data: data})
	switch {
	case err != nil:
		return err
	case !wrote && got.TimedOut:
		return ErrSignalTimedOut
	case !wrote:
		return ErrAlreadySignalled
	}
	return wakeWaiting(ctx, js, store, names, rec, waiting)
}

// wakeWaiting publishes a wake step for each of the nodes that waits now; a node not reached
// yet finds the signal when it arrives.
func wakeWaiting(ctx context.Context, js jetstream.JetStream, store *checkpoint.Store, names workflow.Names, rec *checkpoint.Run, nodes []*workflow.Node) error {
	var errs []string
	for _, n := range nodes {
		st, _, err := store.Node(ctx, rec.ID, n.Name)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if st == nil || st.Status != checkpoint.StatusWaiting {
			continue
		}
		env := &workflow.Envelope{V: workflow.EnvelopeVersion, RunID: rec.ID, Workflow: rec.Workflow, Def: rec.Def, Node: n.Name, Dispatch: st.Dispatch}
		if _, err := producer.PublishWake(ctx, js, names, n.Type, env); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the signal is recorded; waking its node failed (its timeout will find it): %s", strings.Join(errs, "; "))
	}
	return nil
}

// watchSignals wakes the nodes waiting for each signal recorded lately (within the steps
// stream's duplicate window, where every wake of a node is one message): the sender wakes
// them itself, and this covers a sender that died between recording its signal and the
// wake. The worker that leads the live workers does it; if none does, the node's timeout
// still finds the signal.
func (w *Worker) watchSignals(ctx context.Context) {
	var waking sync.WaitGroup
	defer waking.Wait()
	open := func(ctx context.Context) (jetstream.KeyWatcher, error) {
		return w.store.KV().Watch(ctx, workflow.SignalKey("*", "*"), jetstream.UpdatesOnly())
	}
	kvwatch.Follow(ctx, open, func(e jetstream.KeyValueEntry) {
		if e == nil || e.Operation() != jetstream.KeyValuePut || time.Since(e.Created()) > wakeWindow || w.presence == nil || !w.presence.leads() {
			return
		}
		var sig checkpoint.Signal
		if json.Unmarshal(e.Value(), &sig) != nil || sig.TimedOut {
			return
		}
		run, name, ok := workflow.ParseSignalKey(e.Key())
		if !ok {
			return
		}
		waking.Go(func() {
			// Let the sender's own wake go first: this one is deduplicated against it.
			if !sleepCtx(ctx, time.Second) {
				return
			}
			rec, err := w.store.Run(ctx, run)
			if err != nil {
				return
			}
			def, err := w.store.Definition(ctx, rec.Def)
			if err != nil {
				return
			}
			var nodes []*workflow.Node
			for _, n := range def.Nodes {
				if sig, _, _ := n.WaitSettings(); n.Type == workflow.WaitType && sig == name {
					nodes = append(nodes, n)
				}
			}
			if err := wakeWaiting(ctx, w.js, w.store, w.cfg.Names, rec, nodes); err != nil {
				w.log.Debug("signal watch: wake failed", "run", run, "signal", name, "err", err)
			}
		})
	})
}
