package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// pointTriggerStarted is the crash point after a trigger's run was started, before its
// message is acked.
const pointTriggerStarted = "trigger-started"

// pointStartRecorded is the crash point after a start request's run record, before its
// root steps are published (a schedule's fire, for one).
const pointStartRecorded = "start-recorded"

// triggerScan is how often a worker looks in the registry for triggers added or removed.
const triggerScan = 5 * time.Second

// runTriggers consumes the trigger consumer of every registered workflow with `on`, until
// ctx ends: it looks in the registry at once and every triggerScan, starting a loop for a
// trigger that appeared and stopping the loop of one that went away.
func (w *Worker) runTriggers(ctx context.Context) {
	type loop struct {
		on   workflow.Trigger
		stop context.CancelFunc
	}
	loops := map[string]*loop{}
	var wg sync.WaitGroup
	defer func() {
		for _, l := range loops {
			l.stop()
		}
		wg.Wait()
	}()
	prod := producer.New(w.js, w.store, producer.Config{Names: w.cfg.Names})
	tick := time.NewTicker(triggerScan)
	defer tick.Stop()
	for {
		want := w.triggers(ctx)
		for name, l := range loops {
			if on, ok := want[name]; !ok || on != l.on {
				l.stop()
				delete(loops, name)
			}
		}
		for name, on := range want {
			if loops[name] != nil {
				continue
			}
			cons, err := w.js.Consumer(ctx, on.Stream, w.cfg.Names.TriggerConsumer(name))
			if err != nil {
				continue // not created yet (`workflows apply` creates it), or its stream is gone
			}
			lctx, stop := context.WithCancel(ctx)
			loops[name] = &loop{on: on, stop: stop}
			wg.Go(func() { w.triggerLoop(lctx, name, cons, prod) })
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// triggers reads the registry: the trigger of each workflow that has one, by name.
func (w *Worker) triggers(ctx context.Context) map[string]workflow.Trigger {
	out := map[string]workflow.Trigger{}
	refs, err := w.store.Workflows(ctx)
	if err != nil {
		return out
	}
	for _, ref := range refs {
		def, err := w.store.Definition(ctx, ref.Hash)
		if err == nil && def.On != nil {
			out[ref.Name] = *def.On
		}
	}
	return out
}

// triggerLoop starts a run per message of one trigger's consumer until ctx ends.
func (w *Worker) triggerLoop(ctx context.Context, wf string, cons jetstream.Consumer, prod *producer.Producer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(w.cfg.PollWait))
		if err != nil {
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		// The batch's starts go out together (each waits for its PubAck), at most
		// triggerParallel at once.
		var wg sync.WaitGroup
		var dead atomic.Bool
		sem := make(chan struct{}, triggerParallel)
		for msg := range batch.Messages() {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := w.trigger(ctx, wf, msg, prod); err != nil {
					if errors.Is(err, errDead) {
						dead.Store(true)
						return
					}
					w.log.Warn("trigger: cannot start the run; the message comes back", "workflow", wf, "err", err)
					_ = msg.NakWithDelay(time.Second)
				}
			})
		}
		wg.Wait()
		if dead.Load() {
			return
		}
	}
}

// triggerParallel is how many starts of one trigger a worker has in flight.
const triggerParallel = 32

// trigger starts the run of one message: ID <workflow>-<stream seq>, so a redelivered
// message starts no second run; the message is acked only once the start is durable. A body
// that is not JSON goes to the DLQ (trigger: not JSON) and starts nothing.
func (w *Worker) trigger(ctx context.Context, wf string, msg jetstream.Msg, prod *producer.Producer) error {
	meta, err := msg.Metadata()
	if err != nil {
		return err
	}
	body := msg.Data()
	if !json.Valid(body) {
		_, err := dlq.Publish(ctx, w.js, w.cfg.Names, body, dlq.Failure{
			Workflow: wf, Node: workflow.TriggerNode, Reason: "trigger: not JSON",
			Error:  fmt.Sprintf("the message at sequence %d of stream %s is not JSON: no run started", meta.Sequence.Stream, meta.Stream),
			Worker: w.cfg.ID, StreamSeq: meta.Sequence.Stream, Subject: msg.Subject(),
			MsgID: fmt.Sprintf("dlq.trigger.%s.%d", wf, meta.Sequence.Stream),
		})
		if err != nil {
			return err
		}
		return msg.Ack()
	}
	id := workflow.TriggerRunID(wf, meta.Sequence.Stream)
	if _, err := prod.Start(ctx, wf, body, producer.StartOptions{ID: id}); err != nil {
		if errors.Is(err, producer.ErrBadInput) || errors.Is(err, producer.ErrUnknownWorkflow) {
			_, derr := dlq.Publish(ctx, w.js, w.cfg.Names, body, dlq.Failure{
				Workflow: wf, Node: workflow.TriggerNode, Reason: "trigger: " + workflow.OneLine(err.Error(), 200), Error: err.Error(),
				Worker: w.cfg.ID, StreamSeq: meta.Sequence.Stream, Subject: msg.Subject(),
				MsgID: fmt.Sprintf("dlq.trigger.%s.%d", wf, meta.Sequence.Stream),
			})
			if derr != nil {
				return derr
			}
			return msg.Ack()
		}
		return err
	}
	if w.at(pointTriggerStarted) {
		return errDead
	}
	return msg.Ack()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
