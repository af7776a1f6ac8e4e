package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Run statuses as shown to people; node statuses add StatusPending to the stored ones.
const (
	RunRunning    = "running"
	StatusPending = "pending"
)

// RunView is a run as `jetflow runs get --json` shows it.
type RunView struct {
	ID        string               `json:"id"`
	Workflow  string               `json:"workflow"`
	Status    string               `json:"status"`
	CreatedAt time.Time            `json:"created_at"`
	EndedAt   *time.Time           `json:"ended_at"`
	Reason    string               `json:"reason"`
	Nodes     map[string]*NodeView `json:"nodes"`
	// CostUSD is what the run's model calls cost, every call counted (retries, fallbacks,
	// lost answers).
	CostUSD float64 `json:"cost_usd"`
	// WastedUSD is the cost of answers lost to a crash before the checkpoint.
	WastedUSD float64 `json:"wasted_usd,omitempty"`
	// SavedUSD is the cost of done nodes the run did not pay again when it resumed.
	SavedUSD float64 `json:"saved_usd,omitempty"`
	// Order lists the node names in definition order (not in the JSON).
	Order []string `json:"-"`
}

// NodeView is one node of a RunView.
type NodeView struct {
	// Type is the node's type.
	Type      string          `json:"type"`
	Status    string          `json:"status"`
	Attempts  int             `json:"attempts"`
	Output    json.RawMessage `json:"output"`
	Error     string          `json:"error"`
	StartedAt *time.Time      `json:"started_at"`
	EndedAt   *time.Time      `json:"ended_at"`
	NotBefore *time.Time      `json:"not_before,omitempty"`
	Fallback  bool            `json:"fallback,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	DLQID     uint64          `json:"dlq_id,omitempty"`
	// Replays counts operator replays of the node from the DLQ.
	Replays int `json:"replays,omitempty"`
	// EditedFrom is the DLQ entry whose replay replaced the node's input with Input.
	EditedFrom uint64          `json:"edited_from,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	// Items counts a for_each node's items once its list was taken.
	Items *ItemCounts `json:"items,omitempty"`
	// Child is the run a subflow node started.
	Child string `json:"child,omitempty"`
	// Signal is the signal a waiting wait node waits for.
	Signal string `json:"signal,omitempty"`
	// Usage and CostUSD sum an llm node's calls (its items' for a for_each node).
	Usage   *Usage   `json:"usage,omitempty"`
	CostUSD *float64 `json:"cost_usd,omitempty"`

	needs []string
}

// Usage counts an llm node's tokens.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// ItemCounts are a for_each node's items as `runs get` shows them.
type ItemCounts struct {
	Count int `json:"count"`
	Done  int `json:"done"`
	Dead  int `json:"dead"`
}

// NoWorkerReason is the reason MarkUnserved gives a ready node whose type no live worker
// serves.
func NoWorkerReason(typ string) string { return "no live worker for type " + typ }

// MarkUnserved gives each pending node of a running run whose parents are all done (a
// step that can run now), and whose type served says no live worker serves, the reason
// NoWorkerReason: `runs get` shows it as `pending (no live worker for type T)`.
func (v *RunView) MarkUnserved(served func(typ string) bool) {
	if v.Status != RunRunning {
		return
	}
	for _, name := range v.Order {
		n := v.Nodes[name]
		if n == nil || n.Status != StatusPending || n.Type == "" || served(n.Type) {
			continue
		}
		ready := true
		for _, p := range n.needs {
			if pn := v.Nodes[p]; pn == nil || pn.Status != StatusDone && pn.Status != StatusSkipped {
				ready = false
				break
			}
		}
		if ready {
			n.Reason = NoWorkerReason(n.Type)
		}
	}
}

// loadForView returns v with a blob reference replaced by its value, for people to read; a
// blob that cannot be read (gone, corrupt, or no right to read blobs) is shown as its
// reference.
func (s *Store) loadForView(ctx context.Context, run string, v json.RawMessage) json.RawMessage {
	if _, ok := ParseBlobRef(v); !ok {
		return v
	}
	if out, err := s.LoadNodeInput(ctx, run, v, DefaultMaxPayload); err == nil {
		return out
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Describe reads everything about a run: its record, end and every node's state.
// ErrNotFound if there is no such run.
func (s *Store) Describe(ctx context.Context, id string) (*RunView, error) {
	if !workflow.ValidRunID(id) {
		return nil, fmt.Errorf("%w: %q is not a run ID", ErrNotFound, workflow.OneLine(id, 80))
	}
	r, err := s.Run(ctx, id)
	if err != nil {
		return nil, err
	}
	def, err := s.Definition(ctx, r.Def)
	if err != nil {
		return nil, fmt.Errorf("definition of run %s: %w", id, err)
	}
	v := &RunView{ID: id, Workflow: r.Workflow, Status: RunRunning, CreatedAt: r.Created, Nodes: map[string]*NodeView{}}
	end, _, err := s.End(ctx, id)
	if err != nil {
		return nil, err
	}
	if end != nil {
		v.Status, v.Reason, v.EndedAt = end.Status, end.Reason, timePtr(end.At)
	}
	sp, err := s.Spend(ctx, id)
	if err != nil {
		return nil, err
	}
	v.CostUSD, v.WastedUSD, v.SavedUSD = sp.USD, sp.WastedUSD, sp.SavedUSD
	for _, n := range def.Nodes {
		v.Order = append(v.Order, n.Name)
		st, _, err := s.Node(ctx, id, n.Name)
		if err != nil {
			return nil, err
		}
		nv := &NodeView{Status: StatusPending}
		if st != nil {
			nv = &NodeView{Status: st.Status, Attempts: st.Attempts, Output: st.Output, Error: st.LastError,
				StartedAt: timePtr(st.StartedAt), EndedAt: timePtr(st.EndedAt), Fallback: st.Fallback,
				Reason: st.Reason, DLQID: st.DLQSeq, Replays: st.Replays, EditedFrom: st.EditedFrom}
			if st.EditedFrom != 0 {
				nv.Input = s.loadForView(ctx, id, st.Input)
			}
			if it := st.Items; it != nil {
				nv.Items = &ItemCounts{Count: it.Count, Done: it.Done, Dead: it.Dead}
			}
			nv.Child, nv.Signal = st.Child, st.Signal
			nv.Output = s.loadForView(ctx, id, st.Output)
			if st.Status == StatusRetrying || st.Status == StatusWaiting && st.Signal != "" {
				nv.NotBefore = timePtr(st.NotBefore)
			}
		}
		nv.Type, nv.needs = n.Type, n.Needs
		if n.Type == "llm" {
			llmView(nv, n.Name, sp)
		}
		v.Nodes[n.Name] = nv
	}
	return v, nil
}

// WaitEnd waits for run id's end record and returns it.
func (s *Store) WaitEnd(ctx context.Context, id string) (*End, error) {
	var end End
	if err := s.waitKey(ctx, workflow.EndKey(id), &end); err != nil {
		return nil, fmt.Errorf("end of run %s: %w", id, err)
	}
	return &end, nil
}

// WaitRun waits for run id's record, which a worker writes when it takes the run's start
// request, and returns it.
func (s *Store) WaitRun(ctx context.Context, id string) (*Run, error) {
	var r Run
	if err := s.waitKey(ctx, workflow.RunKey(id), &r); err != nil {
		return nil, fmt.Errorf("record of run %s: %w", id, err)
	}
	return &r, nil
}

// waitKey watches key of the runs bucket until it has a value, and decodes it into v.
func (s *Store) waitKey(ctx context.Context, key string, v any) error {
	w, err := s.runs.Watch(ctx, key, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch stopped")
			}
			if e == nil {
				continue
			}
			return json.Unmarshal(e.Value(), v)
		}
	}
}

// llmView fills an llm node's usage and cost from the run's spend (every call), or for an
// answer from the cache from its output (no cost, the original usage), and marks an answer
// from a provider after the first as a fallback.
func llmView(nv *NodeView, name string, sp *Spend) {
	var u Usage
	var usd float64
	found := false
	for key, ns := range sp.Nodes {
		if base, _, _ := strings.Cut(key, "["); base == name {
			found = true
			u.InputTokens += ns.InputTokens
			u.OutputTokens += ns.OutputTokens
			usd += ns.USD
		}
	}
	var out struct {
		Usage     *Usage            `json:"usage"`
		Fallbacks []json.RawMessage `json:"fallbacks"`
	}
	if len(nv.Output) > 0 && json.Unmarshal(nv.Output, &out) == nil {
		if !found && out.Usage != nil {
			u, found = *out.Usage, true
		}
		if len(out.Fallbacks) > 0 {
			nv.Fallback = true
		}
	}
	if found {
		nv.Usage, nv.CostUSD = &u, &usd
	}
}
