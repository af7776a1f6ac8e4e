package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/workflow"
)

// BreakerView is a breaker key that is open or half-open cluster-wide (closed keys have no
// record in the breakers bucket).
type BreakerView struct {
	// Key is the breaker key as configured.
	Key string `json:"key"`
	// State is "open" until OpenUntil, then "half-open" while probes run.
	State     string    `json:"state"`
	OpenUntil time.Time `json:"open_until"`
	// Reason is "breaker" (failures) or "retry-after" (a cool-down the dependency asked for).
	Reason string `json:"reason"`
	// By is the worker that tripped it.
	By string `json:"by"`
	// Probes is how many half-open probes are claimed, of Limit.
	Probes int    `json:"probes"`
	Limit  uint32 `json:"limit"`
}

// ReadBreakers reads the breakers bucket: every key open or half-open now, by key.
func ReadBreakers(ctx context.Context, js jetstream.JetStream, names workflow.Names) ([]BreakerView, error) {
	kv, err := js.KeyValue(ctx, names.BreakersBucket())
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", names.BreakersBucket(), err)
	}
	now := time.Now()
	var out []BreakerView
	err = kvwatch.Scan(ctx, kv, nil, func(e jetstream.KeyValueEntry) error {
		if breaker.IsCountKey(e.Key()) {
			return nil // a closed key's failure streak, not a trip
		}
		var t breaker.Trip
		if json.Unmarshal(e.Value(), &t) != nil {
			return nil
		}
		v := BreakerView{Key: t.Key, State: breaker.Open.String(), OpenUntil: t.OpenUntil, Reason: t.Reason, By: t.By,
			Probes: len(t.Probes), Limit: t.Limit}
		if v.Key == "" {
			v.Key = e.Key()
		}
		if !now.Before(t.OpenUntil) {
			v.State = breaker.HalfOpen.String()
		}
		out = append(out, v)
		return nil
	})
	sortBy(out, func(b BreakerView) string { return b.Key })
	return out, err
}

// ReadWorkers returns the live workers, by ID (consumer.LiveWorkers).
func ReadWorkers(ctx context.Context, js jetstream.JetStream, names workflow.Names) ([]consumer.Presence, error) {
	return consumer.LiveWorkers(ctx, js, names, time.Now())
}

// Overview is the state of the whole installation at a glance, read from the broker: what
// the dashboard's overview and `jetflow top` show.
type Overview struct {
	// At is when it was read.
	At time.Time `json:"at"`
	// Activity is the steps finished recently, cluster-wide.
	Activity ActivityStats `json:"activity"`
	// Backlog is each node type's consumer.
	Backlog []Backlog `json:"backlog"`
	// DLQDepth is how many entries the DLQ holds.
	DLQDepth uint64 `json:"dlq_depth"`
	// Breakers are the keys open or half-open.
	Breakers []BreakerView `json:"breakers"`
	// Workers are the live workers; InFlight sums their steps in flight.
	Workers  []consumer.Presence `json:"workers"`
	InFlight int64               `json:"in_flight"`
	// Errors says what could not be read (the rest is still filled in).
	Errors []string `json:"errors,omitempty"`
}

// ReadOverview reads backlog, DLQ depth, breakers and workers from the broker, and takes the
// activity from act (nil: none). What cannot be read is said in Errors.
func ReadOverview(ctx context.Context, js jetstream.JetStream, names workflow.Names, act *Activity) *Overview {
	o := &Overview{At: time.Now().UTC(), Backlog: []Backlog{}, Breakers: []BreakerView{}, Workers: []consumer.Presence{}}
	note := func(what string, err error) {
		if err != nil {
			o.Errors = append(o.Errors, what+": "+workflow.OneLine(err.Error(), 200))
		}
	}
	var err error
	if o.Backlog, err = ReadBacklog(ctx, js, names); err != nil {
		note("backlog", err)
	}
	o.DLQDepth, err = ReadDLQDepth(ctx, js, names)
	note("DLQ", err)
	if o.Breakers, err = ReadBreakers(ctx, js, names); err != nil {
		note("breakers", err)
	}
	if o.Workers, err = ReadWorkers(ctx, js, names); err != nil {
		note("workers", err)
	}
	for _, w := range o.Workers {
		o.InFlight += w.InFlight
	}
	if o.Backlog == nil {
		o.Backlog = []Backlog{}
	}
	if o.Breakers == nil {
		o.Breakers = []BreakerView{}
	}
	if o.Workers == nil {
		o.Workers = []consumer.Presence{}
	}
	if act != nil {
		o.Activity = act.Stats()
	}
	return o
}
