package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Control flow (DESIGN.md "Control flow: conditions, maps, subflows"). A node's `if` is
// evaluated by the node's own step before its handler; a false one writes the node skipped
// and releases its children as a done node does. A node whose parents are all skipped is
// skipped by whoever completes its join, with no step of its own. A for_each node's own
// step takes the list, writes one pending state per item, then the node's bookkeeping with
// the first items in flight, then publishes them; each item is then a step of its own, whose
// finish releases the next (checkpoint.FinishItem). A subflow node publishes its child's
// start request, then parks (waiting); the child's end wakes it.

// Crash points of control flow, named for tests.
const (
	pointSkipWritten  = "skip-written"  // after a node's skipped state, before its children are released
	pointItemsWritten = "items-written" // after the list of items is stored, before the node's bookkeeping
	pointItemsStarted = "items-started" // after the node's bookkeeping, before the first items are published
	pointItemDone     = "item-done"     // after an item's done (or dead) state, before it is counted
	pointItemCounted  = "item-counted"  // after the count that released the next item, before its publish
	pointChildStarted = "child-started" // after a subflow's start request, before the parent parks
	pointParentParked = "parent-parked" // after the parent parked, before its step is acked
)

// idempotencyKey is the key handlers get: <run>.<node>, or <run>.<node>.<index> for an item.
func (s *stepRun) idempotencyKey() string {
	if s.env.IsItem() {
		return workflow.ItemIdempotencyKey(s.env.RunID, s.env.Node, s.env.Index())
	}
	return workflow.IdempotencyKey(s.env.RunID, s.env.Node)
}

// itemValue is the for_each item's value (loaded from its blob by control).
func (s *stepRun) itemValue() json.RawMessage {
	if s.item != nil {
		return s.item
	}
	if len(s.env.Value) > 0 {
		return s.env.Value
	}
	return json.RawMessage("null")
}

// withItem returns the node input with the item's value and index added ({"input": …,
// "nodes": …, "item": …, "index": i}), as handlers of items receive it.
func withItem(input, item json.RawMessage, index int) json.RawMessage {
	end := len(input) - 1
	for end >= 0 && isSpace(input[end]) {
		end--
	}
	if end < 0 || input[end] != '}' {
		return input
	}
	body := input[:end]
	open := len(body) - 1
	for open >= 0 && isSpace(body[open]) {
		open--
	}
	out := make([]byte, 0, len(input)+len(item)+32)
	out = append(out, body...)
	if open >= 0 && body[open] != '{' {
		out = append(out, ',')
	}
	out = append(out, `"item":`...)
	out = append(out, item...)
	out = append(out, `,"index":`...)
	out = strconv.AppendInt(out, int64(index), 10)
	return append(out, '}')
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// resumable reports whether the node's own step finds control flow under way: a for_each
// node whose items were taken, or a subflow node waiting for its child. Such a step runs no
// handler, so its redelivery is no crash.
func (s *stepRun) resumable() bool {
	st := s.cur.st
	return !s.env.IsItem() && st != nil && !st.Final() && (st.Items != nil || st.Status == checkpoint.StatusWaiting)
}

// resume finishes a step of a node whose control flow is under way.
func (s *stepRun) resume(ctx context.Context) error {
	if s.cur.st.Items != nil {
		// The node's own step again: it may have died before publishing what it released.
		if err := s.publishItems(ctx, s.cur.st.Items.List, s.cur.st.Items.ReleasedBy(checkpoint.ReleasedByNode)); err != nil {
			return err
		}
		return s.msg.Ack()
	}
	if s.node.Type == workflow.WaitType {
		return s.waitWake(ctx)
	}
	return s.subflowWake(ctx)
}

// control is what a step does before its breaker and handler when its node has control
// flow: it reports handled when the step is dealt with (skipped, a map taken, a subflow
// started). A compare-and-set that lost is returned as checkpoint.ErrConflict.
func (s *stepRun) control(ctx context.Context) (handled bool, err error) {
	n := s.node
	if s.env.IsItem() {
		return false, s.loadItem(ctx)
	}
	if n.If == "" && n.ForEach == "" && n.Type != workflow.SubflowType && n.Type != workflow.WaitType {
		return false, nil
	}
	vars, err := s.vars(ctx)
	if err != nil {
		var perm *PermanentError
		if errors.As(err, &perm) {
			return true, s.deadLetter(ctx, s.next(), attemptsOf(s.cur.st), "permanent error", err.Error())
		}
		return true, err
	}
	if n.If != "" {
		ok, err := workflow.Condition(n.If, vars)
		if err != nil {
			return true, s.deadLetter(ctx, s.next(), attemptsOf(s.cur.st), workflow.OneLine(err.Error(), 300), err.Error())
		}
		if !ok {
			return true, s.skip(ctx)
		}
	}
	switch {
	case n.ForEach != "":
		return true, s.startMap(ctx, vars)
	case n.Type == workflow.SubflowType:
		return true, s.startSubflow(ctx)
	case n.Type == workflow.WaitType:
		return true, s.startWait(ctx)
	}
	return false, nil
}

// vars are what the node's expressions read.
func (s *stepRun) vars(ctx context.Context) (workflow.Vars, error) {
	input, err := s.w.store.LoadNodeInput(s.ops(ctx), s.env.RunID, inputOf(s.env, s.cur.st), s.w.cfg.MaxPayload)
	if err != nil {
		if errors.Is(err, checkpoint.ErrBlobMissing) || errors.Is(err, checkpoint.ErrBlobCorrupt) || errors.Is(err, checkpoint.ErrTooLarge) {
			return workflow.Vars{}, Permanent(fmt.Errorf("input: %w", err))
		}
		return workflow.Vars{}, err
	}
	var in producer.NodeInput
	if err := json.Unmarshal(input, &in); err != nil {
		return workflow.Vars{}, Permanent(fmt.Errorf("node input is not an object: %w", err))
	}
	return workflow.Vars{Input: in.Input, Nodes: in.Nodes, RunID: s.env.RunID, Env: s.w.env}, nil
}

// loadItem reads an item's value from its blob, when it was offloaded.
func (s *stepRun) loadItem(ctx context.Context) error {
	if _, ok := checkpoint.ParseBlobRef(s.env.Value); !ok {
		return nil
	}
	v, err := s.w.store.Load(s.ops(ctx), s.env.RunID, s.env.Value, s.w.cfg.MaxPayload)
	if err != nil {
		return err
	}
	s.item = v
	return nil
}

// skip writes the node skipped (its `if` was false), releases its children, and acks.
func (s *stepRun) skip(ctx context.Context) error {
	next := s.next()
	next.Status, next.Output, next.EndedAt, next.Delivery, next.Seq = checkpoint.StatusSkipped, nil, time.Now().UTC(), 0, 0
	if err := s.write(ctx, next); err != nil {
		return err
	}
	s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeSkipped, 0)
	if s.w.at(pointSkipWritten) {
		return errDead
	}
	if err := s.fanOut(ctx, nil); err != nil {
		return err
	}
	return s.msg.Ack()
}

// skipInline writes node skipped because every parent of it was skipped, and releases its
// children. A node found skipped already (a redelivery of whoever skipped it) releases them
// again: the release is idempotent.
func (s *stepRun) skipInline(ctx context.Context, node string) error {
	key := workflow.NodeKey(s.env.RunID, node)
	for range checkpoint.MaxCASRetries {
		st, _, err := s.w.store.NodeAt(s.ops(ctx), key)
		if err != nil {
			return err
		}
		if st != nil && st.Status != checkpoint.StatusSkipped {
			return fmt.Errorf("node %s of run %s has every parent skipped but is %s", node, s.env.RunID, st.Status)
		}
		if st == nil {
			next := &checkpoint.Node{Status: checkpoint.StatusSkipped, Dispatch: workflow.DispatchFirst, EndedAt: time.Now().UTC()}
			if _, err := s.w.store.PutNodeAt(s.ops(ctx), key, next, 0); errors.Is(err, checkpoint.ErrConflict) {
				continue
			} else if err != nil {
				return err
			}
			if n := s.def.Lookup(node); n != nil {
				s.w.cfg.Observer.StepFinished(s.env.Workflow, node, n.Type, OutcomeSkipped, 0)
			}
			if s.w.at(pointSkipWritten) {
				return errDead
			}
		}
		return s.release(ctx, node, true, nil)
	}
	return fmt.Errorf("%w: %s kept changing", checkpoint.ErrConflict, key)
}

// startMap is a for_each node's own step: it takes the list, stores it, writes the node's
// bookkeeping with the first items in flight, publishes them, and acks. An empty list makes
// the node done with output [].
func (s *stepRun) startMap(ctx context.Context, vars workflow.Vars) error {
	list, err := workflow.Items(s.node.ForEach, vars)
	if err != nil {
		return s.deadLetter(ctx, s.next(), attemptsOf(s.cur.st), workflow.OneLine(err.Error(), 300), err.Error())
	}
	now := time.Now().UTC()
	if len(list) == 0 {
		return s.done(ctx, checkpoint.Attempt{Number: attemptsOf(s.cur.st), Worker: s.w.cfg.ID, StartedAt: now}, json.RawMessage("[]"), false)
	}
	listJSON, err := json.Marshal(list)
	if err != nil {
		return s.deadLetter(ctx, s.next(), attemptsOf(s.cur.st), "for_each: the list is not JSON", err.Error())
	}
	ref, err := s.w.store.PutItemList(s.ops(ctx), s.env.RunID, listJSON)
	if err != nil {
		return err
	}
	if s.w.at(pointItemsWritten) {
		return errDead
	}
	next := checkpoint.StartItems(s.next(), ref, len(list), s.node.MaxParallelOrDefault(), s.w.cfg.ID, now)
	// Every item's step carries the node's input: over 512 bytes, the items carry a reference
	// to it instead (one blob, which each worker reads once), so n items cost O(n) bytes, not
	// n times the input (which often holds the list itself).
	input, err := s.w.store.Offload(s.ops(ctx), s.env.RunID, inputOf(s.env, s.cur.st), itemInputInline)
	if err != nil {
		return err
	}
	next.Input = input
	if err := s.write(ctx, next); err != nil {
		return err
	}
	if s.w.at(pointItemsStarted) {
		return errDead
	}
	if err := s.publishItems(ctx, ref, next.Items.ReleasedBy(checkpoint.ReleasedByNode)); err != nil {
		return err
	}
	return s.msg.Ack()
}

// itemInputInline is the largest node input a for_each item's step carries itself.
const itemInputInline = 512

// publishItems publishes the given items of the step's node, each with its value and its
// dispatch (deduplicated by their message IDs). list is the node's list reference.
func (s *stepRun) publishItems(ctx context.Context, list json.RawMessage, items []checkpoint.Release) error {
	if len(items) == 0 {
		return nil
	}
	input := s.env.Input
	if !s.env.IsItem() {
		input = inputOf(s.env, s.cur.st)
	}
	values, err := s.w.itemLists.get(s.ops(ctx), s.w.store, s.env.RunID, list)
	if err != nil {
		return err
	}
	for _, r := range items {
		if r.Item >= len(values) {
			return fmt.Errorf("item %d of node %s of run %s is beyond its list of %d", r.Item, s.env.Node, s.env.RunID, len(values))
		}
		value, err := s.w.store.Offload(s.ops(ctx), s.env.RunID, values[r.Item], s.w.cfg.InlineLimit)
		if err != nil {
			return err
		}
		env := &workflow.Envelope{RunID: s.env.RunID, Workflow: s.env.Workflow, Def: s.env.Def, Node: s.env.Node,
			Input: input, Dispatch: cmpOr(r.Dispatch, workflow.DispatchFirst), Item: &r.Item, Value: value}
		if _, err := producer.Publish(s.ops(ctx), s.w.js, s.w.cfg.Names, s.node.Type, env); err != nil {
			return err
		}
	}
	return nil
}

// itemFinished counts this item's end (done, or dead with reason) in its node, publishes
// the item it released, and then, when the node became done, releases the node's children;
// when the node is dead, makes sure the run's end says failed. The caller acks or terms.
func (s *stepRun) itemFinished(ctx context.Context, dead bool, reason string) error {
	f, err := s.w.itemEnds.finish(s.ops(ctx), s.w.store, s.env.RunID, s.env.Node, checkpoint.ItemEnd{Index: s.env.Index(), Dead: dead, Reason: reason},
		s.node.MaxParallelOrDefault(), s.w.cfg.InlineLimit)
	if err != nil {
		return err
	}
	if s.w.at(pointItemCounted) {
		return errDead
	}
	if err := s.publishItems(ctx, f.Node.Items.List, f.Publish); err != nil {
		return err
	}
	switch f.Node.Status {
	case checkpoint.StatusDone:
		return s.release(ctx, s.env.Node, false, f.Node.Output)
	case checkpoint.StatusDead:
		return s.endRun(ctx, checkpoint.EndFailed, s.endReason(f.Node.Reason))
	}
	return nil
}

// startSubflow is a subflow node's step: it publishes the child's start request (the child's
// ID is derived from the node and its dispatch, so a retry or redelivery starts no second
// child), parks the node waiting for it, and acks; a child that ended already is taken at once.
func (s *stepRun) startSubflow(ctx context.Context) error {
	st := s.cur.st
	rec, err := s.w.store.Run(s.ops(ctx), s.env.RunID)
	if err != nil {
		return err
	}
	depth := 1
	if rec.Parent != nil {
		depth = rec.Parent.Depth + 1
	}
	if depth > workflow.MaxSubflowDepth {
		reason := fmt.Sprintf("subflow nesting deeper than %d", workflow.MaxSubflowDepth)
		return s.deadLetter(ctx, s.next(), attemptsOf(st), reason, reason)
	}
	with, err := s.expandWith(inputOf(s.env, st))
	if err != nil {
		return s.deadLetter(ctx, s.next(), attemptsOf(st), "permanent error", err.Error())
	}
	name, _ := with["workflow"].(string)
	input, err := json.Marshal(with["input"])
	if err != nil {
		return s.deadLetter(ctx, s.next(), attemptsOf(st), "permanent error", "with.input: "+err.Error())
	}
	child := workflow.ChildRunID(s.env.RunID, s.env.Node, s.env.Dispatch)
	if input, err = s.w.store.Offload(s.ops(ctx), child, input, s.w.cfg.InlineLimit); err != nil {
		return err
	}
	req := &workflow.StartRequest{RunID: child, Workflow: name, Input: input, Parent: &workflow.ParentRef{
		Run: s.env.RunID, Node: s.env.Node, Workflow: s.env.Workflow, Def: s.env.Def, Dispatch: s.env.Dispatch, Depth: depth}}
	if _, err := producer.PublishStart(s.ops(ctx), s.w.js, s.w.cfg.Names, req); err != nil {
		return err
	}
	if s.w.at(pointChildStarted) {
		return errDead
	}
	next := s.next()
	next.Status, next.Child, next.Worker, next.StartedAt, next.Delivery, next.Seq = checkpoint.StatusWaiting, child, s.w.cfg.ID, time.Now().UTC(), 0, 0
	if len(next.Input) == 0 {
		next.Input = s.env.Input // the wake carries no input: a replay of the node finds it here
	}
	if err := s.write(ctx, next); err != nil {
		return err
	}
	if s.w.at(pointParentParked) {
		return errDead
	}
	return s.subflowWake(ctx)
}

// subflowWake looks at a waiting subflow node's child: still running, the step is acked (the
// child's end wakes the node again); completed, the node is done with the child's outputs;
// failed or cancelled, the node fails permanently.
func (s *stepRun) subflowWake(ctx context.Context) error {
	st := s.cur.st
	end, _, err := s.w.store.End(s.ops(ctx), st.Child)
	if err != nil {
		return err
	}
	if end == nil {
		return s.msg.Ack()
	}
	a := checkpoint.Attempt{Number: st.Attempts + 1, Worker: s.w.cfg.ID, StartedAt: st.StartedAt}
	if end.Status == checkpoint.EndCompleted {
		out, err := s.childOutput(ctx, st.Child)
		if err != nil {
			return err
		}
		return s.done(ctx, a, out, false)
	}
	what := "failed"
	if end.Status == checkpoint.EndCancelled {
		what = "failed: it was cancelled"
	}
	reason := fmt.Sprintf("subflow %s %s", st.Child, what)
	if end.Reason != "" {
		reason += ": " + end.Reason
	}
	return s.deadLetter(ctx, s.next().Started(a), a.Number, workflow.OneLine(reason, 500), reason)
}

// childOutput is a completed subflow's output: {run_id, outputs: {<child sink>: output}}.
func (s *stepRun) childOutput(ctx context.Context, child string) (json.RawMessage, error) {
	rec, err := s.w.store.Run(s.ops(ctx), child)
	if err != nil {
		return nil, err
	}
	def, err := s.w.store.Definition(s.ops(ctx), rec.Def)
	if err != nil {
		return nil, err
	}
	outputs := map[string]json.RawMessage{}
	for _, sink := range def.Sinks() {
		st, _, err := s.w.store.NodeAt(s.ops(ctx), workflow.NodeKey(child, sink))
		if err != nil {
			return nil, err
		}
		out := json.RawMessage("null")
		if st != nil && st.Status == checkpoint.StatusDone && len(st.Output) > 0 {
			out = st.Output
		}
		outputs[sink] = out
	}
	return json.Marshal(struct {
		RunID   string                     `json:"run_id"`
		Outputs map[string]json.RawMessage `json:"outputs"`
	}{child, outputs})
}

// mayBeChild reports whether run could be a subflow's child: subflow IDs are UUIDv5
// (workflow.ChildRunID), so any other run needs no read of its record to know it has no
// parent.
func mayBeChild(run string) bool {
	if len(run) != 36 {
		return false
	}
	u, err := uuid.Parse(run)
	return err == nil && u.Version() == 5
}

// wakeParent wakes the subflow node that started run, if one did, once the run has ended:
// its wake is deduplicated by its message ID, so every end writer may send it.
func (w *Worker) wakeParent(ctx context.Context, run string) error {
	if !mayBeChild(run) {
		return nil
	}
	rec, err := w.store.Run(ctx, run)
	if err != nil || rec.Parent == nil {
		return err
	}
	_, err = producer.PublishWake(ctx, w.js, w.cfg.Names, workflow.SubflowType, rec.Parent.Wake())
	return err
}

// itemCombiner writes the ends of a node's items that finish in this worker at about the
// same time with one compare-and-set of the node's bookkeeping (checkpoint.FinishItems):
// while one write of a node is under way, the ends that come meanwhile gather in the next
// batch, which one of them writes once the write under way is done. The node's state is one
// key every finishing item writes; one write per item would have the items of a wide map
// conflict with each other.
type itemCombiner struct {
	mu    sync.Mutex
	nodes map[string]*endQueue
}

// endQueue is the ends of one node: whether a write is under way, and the batch gathering.
type endQueue struct {
	busy bool
	next *endBatch
}

// endBatch is ends written together, and their results once written.
type endBatch struct {
	ends []checkpoint.ItemEnd
	out  []*checkpoint.ItemFinish
	err  error
	done chan struct{} // closed once written
	lead chan struct{} // one send: the one of the batch's callers that is to write it
}

// finish writes end (with the ends of the node's other items that finish meanwhile) and
// returns its result. The write is made by the caller that started the batch, or, when a
// write was under way, by the first caller of the batch once that write is done: no caller
// writes more than its own batch, so none holds its step for the others' longer than a write.
func (c *itemCombiner) finish(ctx context.Context, store *checkpoint.Store, run, node string, end checkpoint.ItemEnd, maxParallel, inline int) (*checkpoint.ItemFinish, error) {
	key := run + "." + node
	c.mu.Lock()
	if c.nodes == nil {
		c.nodes = map[string]*endQueue{}
	}
	q := c.nodes[key]
	if q == nil {
		q = &endQueue{}
		c.nodes[key] = q
	}
	if q.next == nil {
		q.next = &endBatch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
	}
	b := q.next
	k := len(b.ends)
	b.ends = append(b.ends, end)
	busy := q.busy
	q.busy = true
	c.mu.Unlock()
	if busy {
		select {
		case <-b.done:
			if b.err != nil {
				return nil, b.err
			}
			return b.out[k], nil
		case <-b.lead: // this caller writes the batch
		}
	}
	c.mu.Lock()
	if q.next == b {
		q.next = nil // later ends gather in a new batch
	}
	c.mu.Unlock()
	b.out, b.err = store.FinishItems(ctx, run, node, b.ends, maxParallel, inline)
	close(b.done)
	c.mu.Lock()
	if q.next != nil {
		q.next.lead <- struct{}{} // one caller of the next batch writes it
	} else {
		q.busy = false
		delete(c.nodes, key)
	}
	c.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	return b.out[k], nil
}

// itemListsKept is how many lists of items a worker keeps parsed.
const itemListsKept = 64

// itemLists keeps the lists of items of the for_each nodes this worker releases items of,
// parsed, by reference: a list never changes (its blob is named by its content), and each
// release needs one value of it.
type itemLists struct {
	mu    sync.Mutex
	lists map[string][]json.RawMessage
	order []string
}

// get returns the list whose reference is ref.
func (c *itemLists) get(ctx context.Context, store *checkpoint.Store, run string, ref json.RawMessage) ([]json.RawMessage, error) {
	key := string(ref)
	c.mu.Lock()
	l, ok := c.lists[key]
	c.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := store.ItemList(ctx, run, ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lists == nil {
		c.lists = map[string][]json.RawMessage{}
	}
	if _, ok := c.lists[key]; !ok {
		if len(c.order) >= itemListsKept {
			delete(c.lists, c.order[0])
			c.order = c.order[1:]
		}
		c.lists[key] = l
		c.order = append(c.order, key)
	}
	return l, nil
}
