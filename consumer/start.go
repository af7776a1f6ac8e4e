package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Producers never publish steps (DESIGN.md, "Starting runs, and who may publish what"): they
// publish a start request, and a worker turns it into the run's record and root steps. Every
// worker takes start requests from the jetflow-start consumer, through the same pull loop,
// slots and drain as its node types. A request is acked only once its roots are published, so
// a worker that dies half-way leaves it to be delivered again, and the second time finds the
// record it wrote and publishes the roots again (deduplicated by their message IDs).

// startTimeout bounds the broker calls one start request makes.
const startTimeout = 10 * time.Second

// refusedStart is a start request no retry can make good: it goes to the DLQ with reason.
// taken says the run ID belongs to a run that exists (another input took it), whose end is
// not this request's to write.
type refusedStart struct {
	reason string
	taken  bool
}

func (r *refusedStart) Error() string { return r.reason }

func refuse(format string, args ...any) error {
	return &refusedStart{reason: fmt.Sprintf(format, args...)}
}

// processStart handles one delivered start request, then calls done.
func (w *Worker) processStart(ctx context.Context, ts *typeState, msg jetstream.Msg, done func()) {
	defer done()
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error("delivered start request has no JetStream metadata", "err", err)
		_ = msg.Term()
		return
	}
	if err := w.handleStart(ctx, ts, msg, meta); err != nil {
		w.log.Warn("start request not handled yet; trying again", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(infraDelay(meta.NumDelivered, ts.ackWait))
	}
}

// handleStart starts the run of a start request and acks it, or files a request that cannot
// start a run in the DLQ and terms it. An error is the broker's: the request is left as it
// is, for the caller to hand back.
func (w *Worker) handleStart(ctx context.Context, ts *typeState, msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
	if w.cfg.Tracer != nil {
		ctx = tracing.Extract(ctx, msg.Headers())
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	req, err := workflow.DecodeStartRequest(msg.Data())
	if err == nil && req.Schedule != "" {
		// A schedule's fire: its run is named by the fire time the server stored it at (it
		// fires on whole seconds, a little late at most), so a fire delivered twice is one run.
		req.RunID = workflow.ScheduleRunID(req.Schedule, meta.Timestamp.Truncate(time.Second))
	}
	if err == nil && msg.Subject() != w.cfg.Names.StartSubject(req.Workflow) {
		err = refuse("malformed: start request of workflow %s came on subject %s", req.Workflow, workflow.OneLine(msg.Subject(), 200))
	}
	if err == nil {
		err = w.startRun(ctx, req)
	}
	var refused *refusedStart
	switch {
	case err == nil:
		_ = msg.Ack()
		return nil
	case errors.Is(err, workflow.ErrMalformed), errors.As(err, &refused):
		if err := w.refuseStart(ctx, msg, meta, req, err.Error()); err != nil {
			return err
		}
		if req != nil && (refused == nil || !refused.taken) && w.noRecord(ctx, req.RunID) {
			// The run will never have a record: its end says why, so `start --wait` and
			// anything else waiting for the run hears of it instead of waiting for ever.
			// (Never over a run that exists: a refused request must not end someone's run.)
			end := &checkpoint.End{Status: checkpoint.EndFailed, Reason: "start refused: " + workflow.OneLine(err.Error(), 500), At: time.Now().UTC()}
			if _, err := w.store.CreateEnd(ctx, req.RunID, end); err != nil {
				w.log.Warn("refused start request: cannot write the run's end", "run_id", req.RunID, "err", err)
			} else if req.Parent != nil {
				// A subflow that will never run: its parent node hears of it and fails.
				if _, err := producer.PublishWake(ctx, w.js, w.cfg.Names, workflow.SubflowType, req.Parent.Wake()); err != nil {
					return err
				}
			}
		}
		return nil
	default:
		return err
	}
}

// noRecord reports whether run has no record (false when that cannot be read).
func (w *Worker) noRecord(ctx context.Context, run string) bool {
	_, err := w.store.Run(ctx, run)
	return errors.Is(err, checkpoint.ErrNotFound)
}

// startRun writes the run record of req (or finds the one an earlier delivery wrote) and
// publishes the run's root steps.
func (w *Worker) startRun(ctx context.Context, req *workflow.StartRequest) error {
	hash, err := w.startDef(ctx, req)
	if err != nil {
		return err
	}
	if ref, ok := checkpoint.ParseBlobRef(req.Input); ok {
		err := w.store.BlobExists(ctx, req.RunID, ref)
		if errors.Is(err, checkpoint.ErrBlobMissing) || errors.Is(err, checkpoint.ErrBlobCorrupt) {
			return refuse("input of run %s: %v", req.RunID, err)
		}
		if err != nil {
			return err
		}
	}
	rec := &checkpoint.Run{ID: req.RunID, Workflow: req.Workflow, Def: hash, Input: req.Input, Parent: req.Parent, Created: time.Now().UTC()}
	if err := w.store.CreateRun(ctx, rec); errors.Is(err, checkpoint.ErrConflict) {
		old, err := w.store.Run(ctx, req.RunID)
		if err != nil {
			return fmt.Errorf("read run %s: %w", req.RunID, err)
		}
		if old.Workflow != req.Workflow || !bytes.Equal(old.Input, req.Input) {
			return &refusedStart{reason: fmt.Sprintf("run ID %s already used by a run of workflow %s with another input: start with another --id", req.RunID, old.Workflow), taken: true}
		}
		rec = old // a second delivery, or a start again with the same ID and input
	} else if err != nil {
		return fmt.Errorf("record run %s: %w", req.RunID, err)
	}
	w.known.add(req.RunID)
	if w.at(pointStartRecorded) {
		return errDead
	}
	if p := rec.Parent; p != nil {
		// A subflow whose parent was cancelled while its start request waited: cancelled too.
		if cancelled, err := w.store.Cancelled(ctx, p.Run); err != nil {
			return err
		} else if cancelled {
			var ended *checkpoint.EndedError
			if _, err := w.store.Cancel(ctx, req.RunID, "parent run "+p.Run+" was cancelled"); err != nil && !errors.As(err, &ended) {
				return err
			}
			return nil
		}
	}
	def, err := w.store.Definition(ctx, rec.Def)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return refuse("definition %s of workflow %s is missing from the registry: apply the workflow again", rec.Def, req.Workflow)
	}
	if err != nil {
		return err
	}
	nodeInput, err := producer.EncodeNodeInput(rec.Input, map[string]json.RawMessage{})
	if err != nil {
		return refuse("input of run %s: %v", req.RunID, err)
	}
	for _, n := range def.Roots() {
		env := &workflow.Envelope{RunID: req.RunID, Workflow: req.Workflow, Def: rec.Def, Node: n.Name, Input: nodeInput, Dispatch: workflow.DispatchFirst}
		if _, err := producer.Publish(ctx, w.js, w.cfg.Names, n.Type, env); err != nil {
			return err
		}
	}
	return nil
}

// startDef returns the hash of the definition req's run runs: the one the producer named,
// when it is a definition of the request's workflow, else the one registered now.
func (w *Worker) startDef(ctx context.Context, req *workflow.StartRequest) (string, error) {
	if req.Def != "" {
		def, err := w.store.Definition(ctx, req.Def)
		switch {
		case err == nil && def.Name == req.Workflow:
			return req.Def, nil
		case err == nil:
			return "", refuse("start request of workflow %s names definition %s, which is workflow %s's", req.Workflow, req.Def, def.Name)
		case !errors.Is(err, checkpoint.ErrNotFound):
			return "", err
		}
	}
	ref, err := w.store.WorkflowRef(ctx, req.Workflow)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return "", refuse("unknown workflow %q: apply it with `jetflow workflows apply FILE`, then start the run again", req.Workflow)
	}
	if err != nil {
		return "", err
	}
	return ref.Hash, nil
}

// refuseStart files a start request that cannot start a run in the DLQ, under the node
// workflow.StartNode of its workflow, and terms it.
func (w *Worker) refuseStart(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, req *workflow.StartRequest, reason string) error {
	f := dlq.Failure{Reason: reason, Error: reason, Worker: w.cfg.ID, StreamSeq: meta.Sequence.Stream, Subject: msg.Subject(), Node: workflow.StartNode}
	if req != nil {
		f.Workflow, f.RunID = req.Workflow, req.RunID
	} else {
		f.Workflow, _ = strings.CutPrefix(msg.Subject(), w.cfg.Names.Prefix()+".start.")
		_, _, f.RunID = w.whatItSays(msg)
	}
	if _, err := dlq.Publish(ctx, w.js, w.cfg.Names, msg.Data(), f); err != nil {
		return fmt.Errorf("move a refused start request to the DLQ: %w", err)
	}
	w.log.Warn("start request refused and moved to the DLQ", "subject", msg.Subject(), "run_id", f.RunID, "reason", reason)
	_ = msg.Term()
	return nil
}

// StartRuns turns the start requests waiting in the steps stream into their runs (record and
// root steps), as a worker does, and returns how many it took, once none is left. It is for
// tools and tests that run no worker; a worker takes start requests itself.
func StartRuns(ctx context.Context, js jetstream.JetStream, store *checkpoint.Store, names workflow.Names) (int, error) {
	w, err := New(js, store, Config{Names: names})
	if err != nil {
		return 0, err
	}
	ts, err := w.startState(ctx)
	if err != nil {
		return 0, err
	}
	taken := 0
	for {
		batch, err := ts.cons.FetchNoWait(64)
		if err != nil {
			return taken, err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return taken, err
			}
			for attempt := 1; ; attempt++ {
				err := w.handleStart(ctx, ts, msg, meta)
				if err == nil {
					break
				}
				if attempt == 3 || ctx.Err() != nil {
					_ = msg.Nak()
					return taken, err
				}
				_ = msg.InProgress()
			}
		}
		if err := batch.Error(); err != nil {
			return taken + got, err
		}
		if taken += got; got == 0 {
			return taken, nil
		}
	}
}
