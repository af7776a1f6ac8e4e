package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// ErrBudgetExceeded is returned by ReserveSpend when a run's spend has reached its budget.
var ErrBudgetExceeded = errors.New("budget exceeded")

// Spend is a run's model spend, in spend.<run>: every llm call's cost, summed cluster-wide
// with compare-and-set writes, so a budget holds with many workers.
type Spend struct {
	// Workflow names the run's workflow (for spend per workflow).
	Workflow string `json:"workflow,omitempty"`
	// USD is what the run's calls cost so far.
	USD float64 `json:"usd"`
	// Reserved holds the estimated cost of calls in flight, by call ID: they count against
	// the budget until they settle.
	Reserved map[string]float64 `json:"reserved,omitempty"`
	// Nodes is the spend by node (a for_each item as "<node>[<index>]").
	Nodes map[string]*NodeSpend `json:"nodes,omitempty"`
	// Providers is the spend by provider name.
	Providers map[string]float64 `json:"providers,omitempty"`
	// WastedUSD is the cost of calls whose answer was lost: the worker died before the
	// node's checkpoint, and the node ran again.
	WastedUSD float64 `json:"wasted_usd,omitempty"`
	// SavedUSD is the cost of done nodes a resumed run did not pay again.
	SavedUSD float64 `json:"saved_usd,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
}

// NodeSpend is one node's share of a run's spend.
type NodeSpend struct {
	// USD is what the node's calls cost.
	USD float64 `json:"usd"`
	// Calls counts the answered calls.
	Calls int `json:"calls"`
	// InputTokens and OutputTokens sum the calls' usage.
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	// Answered is the cost of the last answer not yet known to be kept: if the node runs
	// again, that answer was lost, and its cost becomes wasted.
	Answered float64 `json:"answered,omitempty"`
}

// Call is one model call's cost, for SettleSpend.
type Call struct {
	// ID is the reservation's ID ("" when none was made).
	ID string
	// Node is the node (or item) key in Spend.Nodes.
	Node string
	// Provider names the provider that answered.
	Provider string
	// USD, InputTokens and OutputTokens are the call's cost and usage.
	USD                       float64
	InputTokens, OutputTokens int64
}

// Spend reads a run's spend; a run without llm calls has an empty one.
func (s *Store) Spend(ctx context.Context, run string) (*Spend, error) {
	sp, _, err := s.spend(ctx, run)
	return sp, err
}

func (s *Store) spend(ctx context.Context, run string) (*Spend, uint64, error) {
	var sp Spend
	rev, err := get(ctx, s.runs, workflow.SpendKey(run), &sp)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, 0, err
	}
	return &sp, rev, nil
}

// spendTries bounds the compare-and-set loop on a run's spend: many parallel nodes (a
// for_each over items) of one run write it, and a settle records money already spent, so it
// retries far more than MaxCASRetries, with jittered waits of up to 128 ms (a few seconds in
// all).
const spendTries = 40

// updateSpend applies fn to the run's spend with compare-and-set until it sticks. fn may
// refuse with an error, which is returned as is.
func (s *Store) updateSpend(ctx context.Context, run string, fn func(*Spend) error) (*Spend, error) {
	for try := range spendTries {
		sp, rev, err := s.spend(ctx, run)
		if err != nil {
			return nil, err
		}
		if err := fn(sp); err != nil {
			return sp, err
		}
		sp.Updated = time.Now().UTC()
		if _, err := put(ctx, s.runs, workflow.SpendKey(run), sp, rev); err == nil {
			return sp, nil
		} else if !errors.Is(err, ErrConflict) {
			return nil, err
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(try, 7)))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
	}
	return nil, fmt.Errorf("%w: %s kept changing", ErrConflict, workflow.SpendKey(run))
}

// ReserveSpend records a call about to start, with its estimated cost usd, under id (the
// node or item key: a node makes one call at a time) and checks the run's budget (0: none):
// it fails with ErrBudgetExceeded when what the run spent plus what its calls in flight
// reserved has reached the budget. A reservation or an unkept answer that the same node
// left behind means its earlier call was lost (the worker died before the checkpoint): its
// cost moves to wasted — the answer's real cost, or the estimate of a call that never
// answered. It returns the cost found wasted.
func (s *Store) ReserveSpend(ctx context.Context, run, wf, id string, usd, budget float64) (wasted float64, err error) {
	_, err = s.updateSpend(ctx, run, func(sp *Spend) error {
		wasted = sp.Reserved[id]
		if ns := sp.Nodes[id]; ns != nil {
			wasted += ns.Answered
		}
		total := sp.USD
		for k, r := range sp.Reserved {
			if k != id {
				total += r
			}
		}
		if budget > 0 && total >= budget {
			return fmt.Errorf("%w: the run spent $%.6f of its $%.6f budget", ErrBudgetExceeded, total, budget)
		}
		if sp.Reserved == nil {
			sp.Reserved = map[string]float64{}
		}
		if ns := sp.Nodes[id]; ns != nil {
			ns.Answered = 0
		}
		sp.WastedUSD += wasted
		sp.Workflow = wf
		sp.Reserved[id] = usd
		return nil
	})
	if err != nil {
		wasted = 0
	}
	return wasted, err
}

// ReleaseSpend drops a reservation whose call was not answered (it failed: nothing to pay).
func (s *Store) ReleaseSpend(ctx context.Context, run, id string) error {
	_, err := s.updateSpend(ctx, run, func(sp *Spend) error {
		delete(sp.Reserved, id)
		return nil
	})
	return err
}

// SettleSpend records an answered call: its cost is added to the run, node and provider, its
// reservation is dropped, and the answer is marked unkept until the node's checkpoint makes
// it moot (a node that runs again finds it, see ReserveSpend).
func (s *Store) SettleSpend(ctx context.Context, run, wf string, c Call) error {
	_, err := s.updateSpend(ctx, run, func(sp *Spend) error {
		sp.Workflow = wf
		delete(sp.Reserved, c.ID)
		if sp.Nodes == nil {
			sp.Nodes = map[string]*NodeSpend{}
		}
		if sp.Providers == nil {
			sp.Providers = map[string]float64{}
		}
		ns := sp.Nodes[c.Node]
		if ns == nil {
			ns = &NodeSpend{}
			sp.Nodes[c.Node] = ns
		}
		ns.Answered = c.USD
		ns.USD += c.USD
		ns.Calls++
		ns.InputTokens += c.InputTokens
		ns.OutputTokens += c.OutputTokens
		sp.USD += c.USD
		sp.Providers[c.Provider] += c.USD
		return nil
	})
	return err
}

// AddSaved adds usd to the run's saved cost.
func (s *Store) AddSaved(ctx context.Context, run string, usd float64) error {
	if usd <= 0 {
		return nil
	}
	_, err := s.updateSpend(ctx, run, func(sp *Spend) error {
		sp.SavedUSD += usd
		return nil
	})
	return err
}

// SpendTotal sums the spend of many runs.
type SpendTotal struct {
	// Since is where the sum starts: runs whose spend last changed at or after it count.
	Since time.Time `json:"since"`
	// Runs counts the runs with model calls.
	Runs int `json:"runs"`
	// USD, WastedUSD and SavedUSD sum the runs' Spend fields.
	USD       float64 `json:"usd"`
	WastedUSD float64 `json:"wasted_usd"`
	SavedUSD  float64 `json:"saved_usd"`
	// Workflows and Providers split USD by workflow and by provider.
	Workflows map[string]float64 `json:"workflows"`
	Providers map[string]float64 `json:"providers"`
}

// SpendSince sums the spend of the runs whose spend changed at or after since (a run that
// spans it counts whole). It reads every run's spend key: the dashboard calls it, not the
// step path.
func (s *Store) SpendSince(ctx context.Context, since time.Time) (*SpendTotal, error) {
	t := &SpendTotal{Since: since, Workflows: map[string]float64{}, Providers: map[string]float64{}}
	err := s.scan(ctx, []string{workflow.SpendKey("*")}, func(e jetstream.KeyValueEntry) error {
		var sp Spend
		if json.Unmarshal(e.Value(), &sp) != nil || sp.Updated.Before(since) {
			return nil
		}
		t.Runs++
		t.USD += sp.USD
		t.WastedUSD += sp.WastedUSD
		t.SavedUSD += sp.SavedUSD
		if sp.USD > 0 {
			t.Workflows[sp.Workflow] += sp.USD
		}
		for p, usd := range sp.Providers {
			t.Providers[p] += usd
		}
		return nil
	})
	return t, err
}
