package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/fastjson"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// fanOut is step 6: it publishes the children this node releases, deciding joins with CAS
// writes only, and ends the run when the last sink is done (or skipped).
func (s *stepRun) fanOut(ctx context.Context, out []byte) error {
	st := s.cur.st
	return s.release(ctx, s.env.Node, st != nil && st.Status == checkpoint.StatusSkipped, out)
}

// release is step 6 for node from, settled with output out, or skipped: each child whose
// parents are now all settled runs when at least one of them is done, and is skipped
// (skipInline) when every one was skipped. A skipped parent joins like a done one and gives
// its children a null output.
func (s *stepRun) release(ctx context.Context, from string, skipped bool, out []byte) error {
	children := s.def.Children(from)
	if len(children) == 0 {
		return s.sinkDone(ctx, from)
	}
	var runInput json.RawMessage
	for _, c := range children {
		child := s.def.Lookup(c)
		anyDone := !skipped
		if skipped {
			out = json.RawMessage("null")
		}
		nodes := map[string]json.RawMessage{from: out}
		if len(child.Needs) > 1 {
			complete, err := s.w.store.Join(s.ops(ctx), workflow.JoinKey(s.env.RunID, c), from, child.Needs)
			if err != nil {
				return err
			}
			if !complete {
				continue
			}
			if s.w.at(pointJoinComplete) {
				return errDead
			}
			for _, p := range child.Needs {
				if p == from {
					continue
				}
				pst, _, err := s.w.store.Node(s.ops(ctx), s.env.RunID, p)
				if err != nil {
					return err
				}
				if !pst.Settled() {
					return fmt.Errorf("join of %s is complete but parent %s is not done", c, p)
				}
				if pst.Status == checkpoint.StatusDone {
					anyDone = true
					nodes[p] = pst.Output
				} else {
					nodes[p] = json.RawMessage("null")
				}
			}
		}
		if !anyDone {
			if err := s.skipInline(ctx, c); err != nil {
				return err
			}
			continue
		}
		if runInput == nil {
			in := s.env.Input
			if _, whole := checkpoint.ParseBlobRef(in); whole {
				// The node's input travelled as one blob: the run input is inside it.
				var err error
				if in, err = s.w.store.Load(s.ops(ctx), s.env.RunID, in, s.w.cfg.MaxPayload); err != nil {
					return err
				}
			}
			runInput = runInputOf(in)
		}
		input, err := producer.EncodeNodeInput(runInput, nodes)
		if err != nil {
			return err
		}
		// Parents' outputs each fit inline; a join of several may not: the whole input then
		// travels as a blob.
		if input, err = s.w.store.Offload(s.ops(ctx), s.env.RunID, input, s.w.cfg.InlineLimit); err != nil {
			return err
		}
		env := &workflow.Envelope{RunID: s.env.RunID, Workflow: s.env.Workflow, Def: s.env.Def, Node: c, Input: input, Dispatch: workflow.DispatchFirst}
		if _, err := producer.Publish(s.ops(ctx), s.w.js, s.w.cfg.Names, child.Type, env); err != nil {
			return err
		}
	}
	return nil
}

// runInputOf returns the run's input from a node input ({"input": …, "nodes": …}): read off
// its front when the node input starts with it, as every node input the engine writes does,
// without decoding the parents' outputs that follow; otherwise decoded. null when absent.
func runInputOf(nodeInput json.RawMessage) json.RawMessage {
	if v, ok := fastjson.LeadingField(nodeInput, "input"); ok {
		return v
	}
	var in struct {
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(nodeInput, &in); err != nil || in.Input == nil {
		return json.RawMessage("null")
	}
	return in.Input
}

// sinkDone joins sink into sinks.<run> and ends the run completed when all are done or
// skipped.
func (s *stepRun) sinkDone(ctx context.Context, sink string) error {
	sinks := s.def.Sinks()
	if len(sinks) > 1 {
		complete, err := s.w.store.Join(s.ops(ctx), workflow.SinksKey(s.env.RunID), sink, sinks)
		if err != nil || !complete {
			return err
		}
		if s.w.at(pointSinksComplete) {
			return errDead
		}
	}
	return s.endRun(ctx, checkpoint.EndCompleted, "")
}

// endRun creates the run's end (an existing one is kept) and, when this call wrote it,
// reports the run's duration. A completed end replaces a failed one: every sink is done, so
// every node is, and the failed end was left by a node that died and was replayed since (a
// worker that wrote dead, then its end after the replay had looked for one).
func (s *stepRun) endRun(ctx context.Context, status, reason string) error {
	at := time.Now().UTC()
	end := &checkpoint.End{Status: status, Reason: reason, At: at}
	created, err := s.w.store.CreateEnd(s.ops(ctx), s.env.RunID, end)
	if err != nil {
		return err
	}
	if !created && status == checkpoint.EndCompleted {
		if created, err = s.replaceFailedEnd(ctx, end); err != nil {
			return err
		}
	}
	// A subflow's end wakes its parent node, also on a redelivery that found the end written.
	if err := s.w.wakeParent(s.ops(ctx), s.env.RunID); err != nil {
		return err
	}
	if !created {
		return nil
	}
	if _, nop := s.w.cfg.Observer.(nopObserver); nop {
		return nil // nobody measures run durations
	}
	if began, ok := runCreated(s.env.RunID); ok {
		s.w.cfg.Observer.RunFinished(s.env.Workflow, status, at.Sub(began))
	} else if r, err := s.w.store.Run(ctx, s.env.RunID); err == nil {
		s.w.cfg.Observer.RunFinished(s.env.Workflow, status, at.Sub(r.Created))
	}
	return nil
}

// replaceFailedEnd replaces a failed end of the run with end (completed), at the revision
// read; it reports whether it did. Any other end is kept.
func (s *stepRun) replaceFailedEnd(ctx context.Context, end *checkpoint.End) (bool, error) {
	for range checkpoint.MaxCASRetries {
		cur, rev, err := s.w.store.End(ctx, s.env.RunID)
		if err != nil {
			return false, err
		}
		if cur == nil {
			if created, err := s.w.store.CreateEnd(ctx, s.env.RunID, end); err != nil || created {
				return created, err
			}
			continue
		}
		if cur.Status != checkpoint.EndFailed {
			return false, nil
		}
		s.logger().Info("run's failed end replaced: every node is done", "was", cur.Reason)
		switch err := s.w.store.UpdateEnd(ctx, s.env.RunID, end, rev); {
		case err == nil:
			return true, nil
		case !errors.Is(err, checkpoint.ErrConflict):
			return false, err
		}
	}
	return false, fmt.Errorf("%w: end of run %s kept changing", checkpoint.ErrConflict, s.env.RunID)
}

// runCreated is when a run whose ID is a UUIDv7 (the IDs the engine makes) was created, read
// from the ID itself: a run's end needs no read of its record to report its duration.
func runCreated(id string) (time.Time, bool) {
	if len(id) != 36 {
		return time.Time{}, false
	}
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return time.Time{}, false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec), true
}
