package dlq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Why a replay is refused; a RefusedError wraps one of them.
var (
	// ErrRunCancelled means an operator cancelled the entry's run.
	ErrRunCancelled = errors.New("run cancelled")
	// ErrRunGone means the entry's run record is gone (purged after its retention).
	ErrRunGone = errors.New("run is gone")
	// ErrMalformedEntry means the entry is not a step of a known run, workflow and node.
	ErrMalformedEntry = errors.New("malformed entry")
	// ErrNotDead means the entry's node is not dead, so there is nothing to replay.
	ErrNotDead = errors.New("node is not dead")
)

// RefusedError means a DLQ entry was not replayed, and why. It wraps ErrRunCancelled,
// ErrRunGone, ErrMalformedEntry or ErrNotDead.
type RefusedError struct {
	// ID is the entry.
	ID uint64
	// Reason says why, in one line.
	Reason string
	// Err is the sentinel.
	Err error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("DLQ entry %d not replayed: %s", e.ID, e.Reason)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Replay outcomes, as ReplayResult.Status.
const (
	// StatusReplayed: the node was made retrying and its step published.
	StatusReplayed = "replayed"
	// StatusAlreadyReplayed: an earlier (or concurrent) replay of the entry won; this one only
	// made sure its step was published and the entry deleted.
	StatusAlreadyReplayed = "already replayed"
	// StatusWouldReplay: a dry run found the entry replayable.
	StatusWouldReplay = "would replay"
)

// ReplayOptions tunes Replay.
type ReplayOptions struct {
	// Input, when set, replaces the node's whole input: the JSON object
	// {"input": <run input>, "nodes": {<parent>: <output>, …}} its handler receives (what Show
	// prints as the input). It must be an object with an "input" member; a missing "nodes"
	// member is taken from the entry's input. The edit is recorded in the node state (Input,
	// EditedFrom) and applies to this node only: its children get the run's original input.
	Input json.RawMessage
	// MaxInputBytes caps Input (default producer.DefaultMaxInputBytes).
	MaxInputBytes int
	// DryRun checks that the entry can be replayed without changing anything.
	DryRun bool

	// hook, in tests, is called at the crash points of a replay; returning true stops the
	// replay dead there (it returns errStopped and writes nothing more), as a crash would.
	hook func(point string) bool
}

// ReplayResult is what Replay did with one entry.
type ReplayResult struct {
	// ID is the DLQ entry.
	ID uint64 `json:"id"`
	// RunID, Workflow and Node name the entry's step, when it could be read.
	RunID    string `json:"run_id,omitempty"`
	Workflow string `json:"workflow,omitempty"`
	Node     string `json:"node,omitempty"`
	// Dispatch is the replay's dispatch token, r<ID>.
	Dispatch string `json:"dispatch,omitempty"`
	// Status is StatusReplayed, StatusAlreadyReplayed or StatusWouldReplay.
	Status string `json:"status,omitempty"`
	// Edited says the node runs with an edited input.
	Edited bool `json:"edited,omitempty"`
}

// Replay runs the step of DLQ entry id again, by DESIGN.md's protocol ("Replay, cancel,
// fail"): it refuses (a *RefusedError) when the run is cancelled or gone or the entry is
// malformed; makes the node retrying with dispatch r<id> (attempts 0, replays+1; the last
// error is kept for history until the node succeeds); reopens the run when it had failed only
// because of dead nodes now replayed; publishes the step with msg-id <run>.<node>.r<id>; and
// deletes the entry. Replaying an entry twice, in a row or at once, runs its step once: the
// loser finds the node already at dispatch r<id> and only finishes the publish and delete.
// The same makes a replay stopped partway by a crash safe to run again: whatever gap it
// stopped at, the rerun finds the node at r<id>, re-publishes under the same msg-id (which the
// server drops if the first publish landed) unless the step has run since, and deletes the
// entry. ErrNoEntry if the entry is gone. The result is never nil.
func Replay(ctx context.Context, js jetstream.JetStream, store *checkpoint.Store, names workflow.Names, id uint64, opts ReplayOptions) (*ReplayResult, error) {
	res := &ReplayResult{ID: id}
	s, err := stream(ctx, js, names)
	if err != nil {
		return res, err
	}
	e, err := get(ctx, s, names, id)
	if err != nil {
		return res, err
	}
	res.RunID, res.Workflow, res.Node = e.RunID, e.Workflow, e.Node
	refuse := func(sentinel error, format string, args ...any) (*ReplayResult, error) {
		return res, &RefusedError{ID: id, Reason: fmt.Sprintf(format, args...), Err: sentinel}
	}
	env, err := workflow.DecodeEnvelope(e.Body)
	if err != nil {
		return refuse(ErrMalformedEntry, "%s; inspect it with `jetflow dlq show %d`", workflow.OneLine(err.Error(), 200), id)
	}
	res.RunID, res.Workflow, res.Node = env.RunID, env.Workflow, env.Node
	if _, err := store.Run(ctx, env.RunID); errors.Is(err, checkpoint.ErrNotFound) {
		return refuse(ErrRunGone, "run %s is gone (purged after its retention?); delete the entry with `jetflow dlq purge --run %s`", env.RunID, env.RunID)
	} else if err != nil {
		return res, err
	}
	if c, err := store.Cancelled(ctx, env.RunID); err != nil {
		return res, err
	} else if c {
		return refuse(ErrRunCancelled, "run cancelled")
	}
	def, err := store.Definition(ctx, env.Def)
	if errors.Is(err, checkpoint.ErrNotFound) {
		return refuse(ErrMalformedEntry, "malformed: unknown definition %s of workflow %s", env.Def, env.Workflow)
	} else if err != nil {
		return res, err
	}
	node := def.Lookup(env.Node)
	if node == nil || def.Name != env.Workflow {
		return refuse(ErrMalformedEntry, "malformed: workflow %s has no node %s", env.Workflow, env.Node)
	}
	var edited json.RawMessage
	if opts.Input != nil {
		original := env.Input
		if _, whole := checkpoint.ParseBlobRef(original); whole {
			if original, err = store.Load(ctx, env.RunID, original, 0); err != nil {
				return res, fmt.Errorf("input of DLQ entry %d: %w", id, err)
			}
		}
		if edited, err = EditInput(opts.Input, original, opts.MaxInputBytes); err != nil {
			return res, err
		}
		// A large edit travels as a blob of the run, as a large input does.
		if edited, err = store.Offload(ctx, env.RunID, edited, 0); err != nil {
			return res, err
		}
	}

	dispatch := workflow.DispatchReplay(id)
	res.Dispatch = dispatch
	var st *checkpoint.Node
	already := false
	for try := 0; ; try++ {
		if try == checkpoint.MaxCASRetries {
			return res, fmt.Errorf("%w: node %s of run %s kept changing", checkpoint.ErrConflict, env.Node, env.RunID)
		}
		cur, rev, err := store.NodeAt(ctx, checkpoint.StateKey(env))
		if err != nil {
			return res, err
		}
		switch {
		case cur != nil && cur.Dispatch == dispatch:
			already = true
		case cur != nil && cur.Status != checkpoint.StatusDead && cur.ReplayedFrom == id:
			// Replayed from this entry, and the step moved on since (a scheduled retry, done):
			// a replay stopped before its delete; only the delete is left.
			already = true
		case cur != nil && cur.Status == checkpoint.StatusDead && cur.DLQSeq > id:
			// The node died again after this entry was replayed (a replay stopped before its
			// delete): the newer entry cur.DLQSeq is the live one. Replaying this one would
			// publish under a msg-id the server may drop as a duplicate; only the delete is left.
			already = true
		case cur == nil:
			return refuse(ErrNotDead, "node %s of run %s has no state yet (the move to the DLQ is still finishing?); try again shortly", env.Node, env.RunID)
		case cur.Status != checkpoint.StatusDead:
			return refuse(ErrNotDead, "node %s of run %s is %s, not dead; delete the entry with `jetflow dlq purge --run %s` if it is stale", env.Node, env.RunID, cur.Status, env.RunID)
		}
		if already || opts.DryRun {
			st = cur
			break
		}
		next := cur.Replayed(id, edited)
		if _, err := store.PutNodeAt(ctx, checkpoint.StateKey(env), &next, rev); errors.Is(err, checkpoint.ErrConflict) {
			continue
		} else if err != nil {
			return res, err
		}
		st = &next
		break
	}
	if at(opts.hook, pointReplayRetrying) {
		return res, errStopped
	}
	res.Edited = edited != nil
	if already {
		res.Edited = len(st.Input) > 0 && st.EditedFrom == id
	}
	if opts.DryRun {
		res.Status = StatusWouldReplay
		if already {
			res.Status = StatusAlreadyReplayed
		}
		return res, nil
	}
	publish := true
	if env.IsItem() {
		// The item takes a slot of its node (or waits for one), and the node is no longer dead
		// when this was its last dead item.
		if publish, err = store.ReplayItem(ctx, env.RunID, env.Node, env.Index(), node.MaxParallelOrDefault(), dispatch); err != nil {
			return res, err
		}
	}
	if err := reopen(ctx, store, env.RunID); err != nil {
		return res, err
	}
	if at(opts.hook, pointReplayReopened) {
		return res, errStopped
	}
	if publish && st.Status == checkpoint.StatusRetrying && st.Dispatch == dispatch && st.Attempts == 0 {
		// Not run since the replay: publish (deduplicated if an earlier, interrupted replay
		// of this entry already did).
		step := *env
		step.Dispatch = dispatch
		if _, err := producer.Publish(ctx, js, names, node.Type, &step); err != nil {
			return res, err
		}
	}
	if at(opts.hook, pointReplayPublished) {
		return res, errStopped
	}
	if err := deleteMsg(ctx, s, id); err != nil {
		return res, err
	}
	res.Status = StatusReplayed
	if already {
		res.Status = StatusAlreadyReplayed
	}
	return res, nil
}

// reopen deletes a failed run's end when no node of the run is dead any more, so the run is
// running again; it deletes the end at the revision it read. Afterwards it checks again: a node
// that died or a cancel that came meanwhile (whose end could not be written) ends the run
// again.
func reopen(ctx context.Context, store *checkpoint.Store, run string) error {
	for range checkpoint.MaxCASRetries {
		end, rev, err := store.End(ctx, run)
		if err != nil || end == nil || end.Status != checkpoint.EndFailed {
			return err
		}
		states, err := store.NodeStates(ctx, run)
		if err != nil {
			return err
		}
		if deadNode(states) != "" {
			return nil
		}
		if err := store.DeleteEnd(ctx, run, rev); errors.Is(err, checkpoint.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		if states, err = store.NodeStates(ctx, run); err != nil {
			return err
		}
		if name := deadNode(states); name != "" {
			reason := fmt.Sprintf("node %s: %s", name, cmp.Or(states[name].Reason, "dead"))
			_, err := store.CreateEnd(ctx, run, &checkpoint.End{Status: checkpoint.EndFailed, Reason: reason, At: time.Now().UTC()})
			return err
		}
		if c, err := store.Cancelled(ctx, run); err != nil || !c {
			return err
		}
		_, err = store.CreateEnd(ctx, run, &checkpoint.End{Status: checkpoint.EndCancelled, Reason: checkpoint.DefaultCancelReason, At: time.Now().UTC()})
		return err
	}
	return fmt.Errorf("%w: end.%s kept changing", checkpoint.ErrConflict, run)
}

// deadNode returns the name of a dead node in states, or "".
func deadNode(states map[string]*checkpoint.Node) string {
	for name, st := range states {
		if st.Status == checkpoint.StatusDead {
			return name
		}
	}
	return ""
}

// EditInput checks an edited node input for a replay and returns it compacted: JSON, at most
// max bytes (0: producer.DefaultMaxInputBytes), an object with an "input" member; a missing
// "nodes" member is taken from original. Errors wrap producer.ErrBadInput.
func EditInput(edit, original json.RawMessage, max int) (json.RawMessage, error) {
	b, err := producer.CheckInput(edit, max)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf(`%w: the edited input must be the node's whole input, a JSON object {"input": …, "nodes": …} (see `+"`jetflow dlq show ID`"+`)`, producer.ErrBadInput)
	}
	if _, ok := obj["input"]; !ok {
		return nil, fmt.Errorf(`%w: the edited input has no "input" member: give the node's whole input, {"input": <run input>, "nodes": …}`, producer.ErrBadInput)
	}
	if _, ok := obj["nodes"]; !ok {
		var orig producer.NodeInput
		_ = json.Unmarshal(original, &orig)
		obj["nodes"], _ = json.Marshal(orig.Nodes)
		if orig.Nodes == nil {
			obj["nodes"] = json.RawMessage("{}")
		}
		if b, err = json.Marshal(obj); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// deleteMsg deletes entry id; an entry already gone is fine.
func deleteMsg(ctx context.Context, s jetstream.Stream, id uint64) error {
	err := s.DeleteMsg(ctx, id)
	if err == nil {
		return nil
	}
	if _, gerr := s.GetMsg(ctx, id); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("delete DLQ entry %d: %w", id, err)
}

// DefaultReplayRate is how many entries ReplayBatch replays a second unless told otherwise.
const DefaultReplayRate = 10

// BatchOptions tunes ReplayBatch.
type BatchOptions struct {
	// Rate is the most entries replayed per second (default 10).
	Rate float64
	// DryRun checks each entry without changing anything.
	DryRun bool
}

// ReplayBatch replays the entries ids in order, at most opts.Rate a second, and calls each
// (if not nil) with every entry's result and error. One entry's failure does not stop the
// others; it returns ctx's error if ctx ends first, else the number of entries not replayed.
func ReplayBatch(ctx context.Context, js jetstream.JetStream, store *checkpoint.Store, names workflow.Names, ids []uint64, opts BatchOptions, each func(*ReplayResult, error)) (int, error) {
	rate := opts.Rate
	if rate <= 0 {
		rate = DefaultReplayRate
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	failed := 0
	for i, id := range ids {
		if i > 0 && interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return failed, ctx.Err()
				case <-t.C:
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return failed, err
		}
		res, err := Replay(ctx, js, store, names, id, ReplayOptions{DryRun: opts.DryRun})
		if err != nil {
			failed++
		}
		if each != nil {
			each(res, err)
		}
	}
	return failed, nil
}
