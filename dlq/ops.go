package dlq

import (
	"cmp"
	"context"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// GroupCount is how many entries share a workflow, node and reason.
type GroupCount struct {
	Workflow string `json:"workflow"` // empty for malformed entries
	Node     string `json:"node"`     // empty for malformed entries
	Reason   string `json:"reason"`   // the Jetflow-Reason header
	Count    int    `json:"count"`    // entries in the group
}

// Group counts entries by workflow, node and reason, the largest group first (ties by
// workflow, node, then reason).
func Group(entries []*Entry) []GroupCount {
	type key struct{ wf, node, reason string }
	counts := map[key]int{}
	for _, e := range entries {
		counts[key{e.Workflow, e.Node, e.Reason}]++
	}
	out := make([]GroupCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, GroupCount{Workflow: k.wf, Node: k.node, Reason: k.reason, Count: n})
	}
	slices.SortFunc(out, func(a, b GroupCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Workflow, b.Workflow),
			cmp.Compare(a.Node, b.Node), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// IDs returns the IDs of entries, in order.
func IDs(entries []*Entry) []uint64 {
	ids := make([]uint64, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	return ids
}

// Delete deletes the entries with the given IDs and reports how many it deleted; an entry
// already gone is skipped.
func Delete(ctx context.Context, js jetstream.JetStream, names workflow.Names, ids ...uint64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	s, err := stream(ctx, js, names)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if err := s.DeleteMsg(ctx, id); err != nil {
			if err := deleteMsg(ctx, s, id); err != nil {
				return n, err
			}
			continue // it was gone already
		}
		n++
	}
	return n, nil
}

// Purge deletes the entries matching f and reports how many it deleted. It leaves the runs
// alone: their dead nodes stay dead, and the reaper may purge a run once it has no entry.
func Purge(ctx context.Context, js jetstream.JetStream, names workflow.Names, f Filter) (int, error) {
	entries, err := List(ctx, js, names, f)
	if err != nil {
		return 0, err
	}
	return Delete(ctx, js, names, IDs(entries)...)
}
