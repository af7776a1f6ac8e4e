package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// The items of a for_each node (DESIGN.md "Control flow"). The node's step stores the list
// once (a blob) and each item travels with its value; each item has its own state,
// item.<run>.<node>.<index>, driven by the item's own steps as any node state is (absent:
// never tried). The node's state keeps only the list's reference, counts and the items in
// flight (Items): a finished item releases the next with one compare-and-set write of that
// bounded value, so n items cost O(n) writes of O(P) bytes, never a growing set.

// Released item "by" values: who released an item into flight.
const (
	// ReleasedByNode marks the items the node's own step released when it took the list.
	ReleasedByNode = -1
	// ReleasedByReplay marks an item a DLQ replay released.
	ReleasedByReplay = -2
)

// NodeAt reads the state at key (a node.* or item.* key) and its revision; a key never
// written is (nil, 0, nil).
func (s *Store) NodeAt(ctx context.Context, key string) (*Node, uint64, error) {
	var n Node
	rev, err := get(ctx, s.runs, key, &n)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return &n, rev, nil
}

// PutNodeAt creates (rev 0) or updates (at rev) the state at key.
func (s *Store) PutNodeAt(ctx context.Context, key string, n *Node, rev uint64) (uint64, error) {
	return put(ctx, s.runs, key, n, rev)
}

// StateKey is the key of the state a step message works on: its node's, or its item's.
func StateKey(env *workflow.Envelope) string {
	if env.Item != nil {
		return workflow.ItemKey(env.RunID, env.Node, *env.Item)
	}
	return workflow.NodeKey(env.RunID, env.Node)
}

// PutItemList stores a for_each node's list of items (a JSON array) as a blob of run and
// returns its reference: written once when the node's step takes the list (again, the same
// blob, after a crash), read by whoever releases an item into flight.
func (s *Store) PutItemList(ctx context.Context, run string, list json.RawMessage) (json.RawMessage, error) {
	ref, err := s.PutBlob(ctx, run, list)
	if err != nil {
		return nil, err
	}
	return ref.JSON(), nil
}

// ItemList reads a for_each node's list of items by its reference.
func (s *Store) ItemList(ctx context.Context, run string, ref json.RawMessage) ([]json.RawMessage, error) {
	b, err := s.Load(ctx, run, ref, 0)
	if err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("list of items of run %s is not a JSON array: %w", run, err)
	}
	return list, nil
}

// StartItems is the node state a for_each node's own step writes once its list is stored
// (list, its reference): running, with the first maxParallel items in flight, released by
// the node's step.
func StartItems(from Node, list json.RawMessage, count, maxParallel int, worker string, at time.Time) Node {
	n := from
	n.Status, n.Worker, n.StartedAt, n.Delivery, n.Seq = StatusRunning, worker, at, 0, 0
	it := &Items{List: list, Count: count, Next: min(count, maxParallel)}
	for i := range it.Next {
		it.Inflight = append(it.Inflight, Release{Item: i, By: ReleasedByNode})
	}
	n.Items = it
	return n
}

// ReleasedBy returns the items in flight that by released.
func (it *Items) ReleasedBy(by int) []Release {
	var out []Release
	for _, r := range it.Inflight {
		if r.By == by {
			out = append(out, r)
		}
	}
	return out
}

// ItemFinish is what FinishItem did for one item.
type ItemFinish struct {
	// Publish are the items the finished item released (again, on a redelivery): the
	// caller publishes them.
	Publish []Release
	// Node is the node's state after the write.
	Node *Node
	// NodeDied is set when this item's death made the node dead.
	NodeDied bool
}

// ItemEnd is one item's end for FinishItems: done, or dead with a reason.
type ItemEnd struct {
	Index  int
	Dead   bool
	Reason string
}

// finishTries bounds the compare-and-set tries of FinishItems: the node's bookkeeping is
// one key that every finishing item of the node writes, so conflicts are expected when
// several workers run its items; each try after a conflict waits a little, at random.
const finishTries = 40

// FinishItem is FinishItems for one item.
func (s *Store) FinishItem(ctx context.Context, run, node string, index int, dead bool, reason string, maxParallel, inline int) (*ItemFinish, error) {
	out, err := s.FinishItems(ctx, run, node, []ItemEnd{{Index: index, Dead: dead, Reason: reason}}, maxParallel, inline)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// FinishItems counts the given items of for_each node of run as done or dead in the node's
// state, with one compare-and-set write for all of them, and releases the next item into
// each freed slot (a replayed item waiting first, then the next never released). When the
// last item is done, the same write makes the node done, its output the list of the items'
// outputs in order (offloaded over inline bytes). An item no longer in flight was counted
// already (a redelivery after a crash): it changes nothing, and its Publish still names what
// it released, which may not have been published. The results are in the order of ends.
func (s *Store) FinishItems(ctx context.Context, run, node string, ends []ItemEnd, maxParallel, inline int) ([]*ItemFinish, error) {
	key := workflow.NodeKey(run, node)
	for try := range finishTries {
		if try > 0 {
			if err := sleepJitter(ctx, try); err != nil {
				return nil, err
			}
		}
		// The state this process wrote last is tried first, without a read: when no other
		// worker wrote since, the write needs none (a conflict reads it).
		st, rev := s.lastItems(key, try)
		if st == nil {
			var err error
			if st, rev, err = s.NodeAt(ctx, key); err != nil {
				return nil, err
			}
		}
		if st == nil || st.Items == nil {
			return nil, fmt.Errorf("items of node %s of run %s finished, but the node has no items", node, run)
		}
		next := *st
		nit := *st.Items
		nit.Inflight = slices.Clone(st.Items.Inflight)
		nit.Requeue = slices.Clone(st.Items.Requeue)
		out := make([]*ItemFinish, len(ends))
		changed := false
		for k, e := range ends {
			out[k] = &ItemFinish{}
			at := slices.IndexFunc(nit.Inflight, func(r Release) bool { return r.Item == e.Index })
			if at < 0 {
				out[k].Publish = nit.ReleasedBy(e.Index)
				continue
			}
			changed = true
			nit.Inflight = slices.Delete(nit.Inflight, at, at+1)
			if e.Dead {
				nit.Dead++
				if next.Status != StatusDead {
					out[k].NodeDied = true
					next.Status, next.Reason = StatusDead, fmt.Sprintf("item %d: %s", e.Index, e.Reason)
					next.EndedAt = time.Now().UTC()
				}
			} else {
				nit.Done++
			}
			nit.release(e.Index, maxParallel)
		}
		if !changed {
			for _, f := range out {
				f.Node = st
			}
			return out, nil
		}
		if len(nit.Requeue) == 0 {
			nit.Requeue = nil
		}
		next.Items = &nit
		if nit.Done == nit.Count {
			list, err := s.ItemOutputs(ctx, run, node, nit.Count)
			if err != nil {
				return nil, err
			}
			if list, err = s.Offload(ctx, run, list, inline); err != nil {
				return nil, err
			}
			next.Status, next.Output, next.Reason, next.LastError = StatusDone, list, "", ""
			next.EndedAt = time.Now().UTC()
		}
		newRev, err := put(ctx, s.runs, key, &next, rev)
		switch {
		case errors.Is(err, ErrConflict):
			s.itemsSeen.Delete(key)
			continue
		case err != nil:
			s.itemsSeen.Delete(key)
			return nil, err
		}
		if next.Status == StatusRunning {
			s.itemsSeen.Store(key, &seenItems{st: next, rev: newRev})
		} else {
			s.itemsSeen.Delete(key)
		}
		for k, e := range ends {
			if out[k].Publish == nil {
				out[k].Publish = nit.ReleasedBy(e.Index)
			}
			out[k].Node = &next
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %s kept changing", ErrConflict, key)
}

// seenItems is a for_each node's state as this process last wrote it, and its revision.
type seenItems struct {
	st  Node
	rev uint64
}

// lastItems returns the state of key this process last wrote (a copy), on a first try only.
func (s *Store) lastItems(key string, try int) (*Node, uint64) {
	if try > 0 {
		return nil, 0
	}
	v, ok := s.itemsSeen.Load(key)
	if !ok {
		return nil, 0
	}
	seen := v.(*seenItems)
	st := seen.st
	return &st, seen.rev
}

// release fills the free slots after item by finished: replayed items waiting first, then
// the next items never released, each marked as released by by.
func (it *Items) release(by, maxParallel int) {
	for len(it.Inflight) < maxParallel {
		switch {
		case len(it.Requeue) > 0:
			r := it.Requeue[0]
			r.By = by
			it.Inflight = append(it.Inflight, r)
			it.Requeue = it.Requeue[1:]
		case it.Next < it.Count:
			it.Inflight = append(it.Inflight, Release{Item: it.Next, By: by})
			it.Next++
		default:
			return
		}
	}
}

// sleepJitter waits a random while that grows with try (up to about 20 ms), or until ctx ends.
func sleepJitter(ctx context.Context, try int) error {
	d := time.Duration(rand.Int64N(int64(min(try, 20)) * int64(time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ItemStates reads the state of every item of a for_each node that has one, by index.
func (s *Store) ItemStates(ctx context.Context, run, node string) (map[int]*Node, error) {
	out := map[int]*Node{}
	prefix := workflow.ItemKey(run, node, 0)
	prefix = prefix[:len(prefix)-1]
	err := s.scan(ctx, []string{workflow.ItemsFilter(run, node)}, func(e jetstream.KeyValueEntry) error {
		i, err := strconv.Atoi(strings.TrimPrefix(e.Key(), prefix))
		if err != nil {
			return nil
		}
		var st Node
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return fmt.Errorf("read %s: stored value is not valid: %w", e.Key(), err)
		}
		out[i] = &st
		return nil
	})
	return out, err
}

// ItemOutputs returns the JSON list of the outputs of items 0..count-1, every one done (a
// blob reference stays a reference inside the list).
func (s *Store) ItemOutputs(ctx context.Context, run, node string, count int) (json.RawMessage, error) {
	states, err := s.ItemStates(ctx, run, node)
	if err != nil {
		return nil, err
	}
	b := []byte{'['}
	for i := range count {
		st := states[i]
		if st == nil || st.Status != StatusDone {
			return nil, fmt.Errorf("item %d of node %s of run %s is counted done but is not", i, node, run)
		}
		if i > 0 {
			b = append(b, ',')
		}
		out := st.Output
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		b = append(b, out...)
	}
	return append(b, ']'), nil
}

// ReplayItem puts a replayed item (now of dispatch dispatch) back into its node's
// bookkeeping: the node is no longer dead when this was its last dead item, and the item
// takes a free slot at once (it is then released by ReleasedByReplay and the caller
// publishes it) or waits in Requeue for one, which a finishing item releases. It reports
// whether the caller publishes the item now. An item already in flight or queued writes
// nothing (a replay done again).
func (s *Store) ReplayItem(ctx context.Context, run, node string, index, maxParallel int, dispatch string) (bool, error) {
	key := workflow.NodeKey(run, node)
	for range MaxCASRetries {
		st, rev, err := s.NodeAt(ctx, key)
		if err != nil {
			return false, err
		}
		if st == nil || st.Items == nil {
			return false, fmt.Errorf("node %s of run %s has no items", node, run)
		}
		it := st.Items
		if i := slices.IndexFunc(it.Inflight, func(r Release) bool { return r.Item == index }); i >= 0 {
			return it.Inflight[i].By == ReleasedByReplay, nil
		}
		if slices.ContainsFunc(it.Requeue, func(r Release) bool { return r.Item == index }) {
			return false, nil
		}
		next := *st
		nit := *it
		nit.Inflight = slices.Clone(it.Inflight)
		nit.Requeue = slices.Clone(it.Requeue)
		if nit.Dead > 0 {
			nit.Dead--
		}
		if nit.Dead == 0 && next.Status == StatusDead {
			next.Status, next.Reason, next.EndedAt = StatusRunning, "", time.Time{}
		}
		now := len(nit.Inflight) < maxParallel
		r := Release{Item: index, By: ReleasedByReplay, Dispatch: dispatch}
		if now {
			nit.Inflight = append(nit.Inflight, r)
		} else {
			nit.Requeue = append(nit.Requeue, r)
		}
		next.Items = &nit
		switch _, err := put(ctx, s.runs, key, &next, rev); {
		case errors.Is(err, ErrConflict):
			continue
		case err != nil:
			return false, err
		}
		return now, nil
	}
	return false, fmt.Errorf("%w: %s kept changing", ErrConflict, key)
}
