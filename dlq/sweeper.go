package dlq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// maxDeliverAdvisory is the part of the server's MAX_DELIVERIES advisory the sweeper reads.
type maxDeliverAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Sweeper is the last net for poison steps: it reads the MAX_DELIVERIES advisories captured
// in the advisory stream and moves each step that reached MaxDeliver without a result to the
// DLQ (publish, CAS the node dead, create the run's end, delete the step, ack the advisory —
// in that order, so a crash between two writes is finished by the advisory's redelivery).
// Any number of workers may run one: the durable consumer hands each advisory to one.
type Sweeper struct {
	js     jetstream.JetStream
	store  *checkpoint.Store
	names  workflow.Names
	worker string
	log    *slog.Logger

	// hook, in tests, is called at the crash points of a sweep; returning true stops the
	// sweep dead there (nothing more is written and the advisory is not acked).
	hook func(point string) bool
}

// NewSweeper returns a sweeper that reports itself as worker in DLQ headers.
func NewSweeper(js jetstream.JetStream, store *checkpoint.Store, names workflow.Names, worker string, log *slog.Logger) *Sweeper {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Sweeper{js: js, store: store, names: names, worker: worker, log: log}
}

// SweeperConsumerConfig is the durable consumer of the advisory stream.
func SweeperConsumerConfig(names workflow.Names) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       names.SweeperConsumer(),
		Description:   "jetflow MaxDeliver sweeper",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 100,
	}
}

// Run sweeps until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for ctx.Err() == nil {
		if cons == nil {
			c, err := s.js.Consumer(ctx, s.names.AdvisoryStream(), s.names.SweeperConsumer())
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				c, err = s.js.CreateConsumer(ctx, s.names.AdvisoryStream(), SweeperConsumerConfig(s.names))
			}
			if err != nil {
				s.log.Warn("sweeper: cannot bind the advisory consumer", "err", err)
				if !sleepCtx(ctx, 5*time.Second) {
					return nil
				}
				continue
			}
			cons = c
		}
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if !sleepCtx(ctx, time.Second) {
				return nil
			}
			continue
		}
		for msg := range batch.Messages() {
			if err := s.sweep(ctx, msg.Data()); err != nil {
				s.log.Warn("sweeper: advisory not handled; it will come back", "err", err)
				_ = msg.NakWithDelay(5 * time.Second)
				continue
			}
			_ = msg.Ack()
		}
	}
	return nil
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

// sweep handles one advisory.
func (s *Sweeper) sweep(ctx context.Context, data []byte) error {
	var adv maxDeliverAdvisory
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		return nil // not an advisory we can act on: drop it
	}
	if adv.Stream != s.names.StepsStream() {
		return nil
	}
	steps, err := s.js.Stream(ctx, s.names.StepsStream())
	if err != nil {
		return err
	}
	raw, err := steps.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // already handled
	}
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("delivered %d times without finishing (worker crash or timeout)", adv.Deliveries)
	env, derr := workflow.DecodeEnvelope(raw.Data)
	f := Failure{Reason: reason, Error: reason, Worker: s.worker, StreamSeq: adv.StreamSeq, Subject: raw.Subject, Deliveries: adv.Deliveries}
	if derr != nil {
		f.Reason, f.Error = derr.Error(), derr.Error()
		if _, err := Publish(ctx, s.js, s.names, raw.Data, f); err != nil {
			return err
		}
		if at(s.hook, pointSweepPublished) {
			return errStopped
		}
		return s.deleteStep(ctx, steps, adv.StreamSeq)
	}
	f.Workflow, f.Node, f.RunID, f.Item = env.Workflow, env.Node, env.RunID, env.Item
	for try := 0; ; try++ {
		if try == checkpoint.MaxCASRetries {
			// Never fall through to the end and the delete while the node is not dead: the
			// advisory comes back and the next sweep tries again.
			return fmt.Errorf("%w: node %s of run %s kept changing", checkpoint.ErrConflict, env.Node, env.RunID)
		}
		st, rev, err := s.store.NodeAt(ctx, checkpoint.StateKey(env))
		if err != nil {
			return err
		}
		want := workflow.DispatchFirst
		if st != nil && st.Dispatch != "" {
			want = st.Dispatch
		}
		if (st != nil && st.Status == checkpoint.StatusDone) || env.Dispatch != want {
			// Finished after all, or a stale copy: nothing to dead-letter.
			return s.deleteStep(ctx, steps, adv.StreamSeq)
		}
		if st != nil && st.Status == checkpoint.StatusDead {
			break // dead-lettered already (by a sweep stopped partway, or by a worker)
		}
		// The entry says what the node went through: its attempts and real last error (the
		// reason says why it stopped; the delivery count has its own header).
		if st != nil {
			f.Attempts = st.Attempts
			f.Error = cmp.Or(st.LastError, reason)
		}
		seq, err := Publish(ctx, s.js, s.names, raw.Data, f)
		if err != nil {
			return err
		}
		if at(s.hook, pointSweepPublished) {
			return errStopped
		}
		from := checkpoint.From(st, env.Dispatch)
		next := from.Dead(from.Attempts, reason, cmp.Or(from.LastError, reason), seq, "", time.Now().UTC())
		if _, err := s.store.PutNodeAt(ctx, checkpoint.StateKey(env), &next, rev); errors.Is(err, checkpoint.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		s.log.Warn("poison step moved to the DLQ", "run_id", env.RunID, "workflow", env.Workflow, "node", env.Node, "dlq_id", seq, "deliveries", adv.Deliveries)
		break
	}
	if at(s.hook, pointSweepDead) {
		return errStopped
	}
	endReason := fmt.Sprintf("node %s: %s", env.Node, reason)
	if env.IsItem() {
		if endReason, err = s.itemDied(ctx, env, reason); err != nil {
			return err
		}
	}
	if _, err := s.store.CreateEnd(ctx, env.RunID, &checkpoint.End{Status: checkpoint.EndFailed,
		Reason: endReason, At: time.Now().UTC()}); err != nil {
		return err
	}
	if r, err := s.store.Run(ctx, env.RunID); err == nil && r.Parent != nil {
		// A subflow's end wakes its parent node.
		if _, err := producer.PublishWake(ctx, s.js, s.names, workflow.SubflowType, r.Parent.Wake()); err != nil {
			return err
		}
	}
	if at(s.hook, pointSweepEnded) {
		return errStopped
	}
	return s.deleteStep(ctx, steps, adv.StreamSeq)
}

// itemDied counts a dead for_each item in its node (which is then dead) and publishes the
// item that takes its slot, as a worker does; it returns the run's end reason.
func (s *Sweeper) itemDied(ctx context.Context, env *workflow.Envelope, reason string) (string, error) {
	def, err := s.store.Definition(ctx, env.Def)
	if err != nil {
		return "", err
	}
	node := def.Lookup(env.Node)
	if node == nil {
		return "", fmt.Errorf("workflow %s has no node %s", env.Workflow, env.Node)
	}
	f, err := s.store.FinishItem(ctx, env.RunID, env.Node, env.Index(), true, reason, node.MaxParallelOrDefault(), 0)
	if err != nil {
		return "", err
	}
	var values []json.RawMessage
	if len(f.Publish) > 0 {
		if values, err = s.store.ItemList(ctx, env.RunID, f.Node.Items.List); err != nil {
			return "", err
		}
	}
	for _, r := range f.Publish {
		if r.Item >= len(values) {
			return "", fmt.Errorf("item %d of node %s of run %s is beyond its list", r.Item, env.Node, env.RunID)
		}
		value, err := s.store.Offload(ctx, env.RunID, values[r.Item], 0)
		if err != nil {
			return "", err
		}
		next := &workflow.Envelope{RunID: env.RunID, Workflow: env.Workflow, Def: env.Def, Node: env.Node, Input: env.Input,
			Dispatch: cmp.Or(r.Dispatch, workflow.DispatchFirst), Item: &r.Item, Value: value}
		if _, err := producer.Publish(ctx, s.js, s.names, node.Type, next); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("node %s: %s", env.Node, cmp.Or(f.Node.Reason, reason)), nil
}

// deleteStep deletes the step at seq from the steps stream (already gone is fine), the last
// write before the advisory's ack.
func (s *Sweeper) deleteStep(ctx context.Context, steps jetstream.Stream, seq uint64) error {
	if err := steps.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete step %d: %w", seq, err)
	}
	if at(s.hook, pointSweepDeleted) {
		return errStopped
	}
	return nil
}
