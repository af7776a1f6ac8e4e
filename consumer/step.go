package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Step is what a handler gets: which node of which run it runs, and the node's input.
type Step struct {
	// RunID is the run the step belongs to.
	RunID string
	// Workflow is the workflow's name.
	Workflow string
	// Node is the node's name.
	Node string
	// Type is the node type.
	Type string
	// Attempt is this handler run's number, from 1.
	Attempt int
	// IdempotencyKey is "<runID>.<node>" ("<runID>.<node>.<index>" for a for_each item),
	// stable across retries and redeliveries: use it to make side effects happen once.
	IdempotencyKey string
	// Input is the node's input: {"input": <run input>, "nodes": {<parent>: <output>, …}}.
	Input json.RawMessage
	// With holds the node's settings from the definition.
	With map[string]any
	// NotBefore is when the step was parked to wake (Park, sleep nodes); zero otherwise.
	NotBefore time.Time
	// Fallback, when set, says why this handler runs as a fallback of the node's own type
	// ("breaker … is open", "attempts exhausted …").
	Fallback string
	// Item is the value of the for_each item this step runs (also in Input as "item"); nil
	// for a node without for_each.
	Item json.RawMessage
	// Index is the for_each item's index (also in Input as "index"); -1 for a node without
	// for_each.
	Index int
	// Budget is the workflow's budget.usd: the most its model calls may cost per run
	// (0: no budget).
	Budget float64

	run *stepRun // for progress; nil in handlers called outside a worker
	err error    // the handler's error, for the step's span
}

// ErrNoProgress is returned by Progress when no progress was saved for the step.
var ErrNoProgress = errors.New("no progress saved")

// SaveProgress records v (as JSON) as the step's progress in progress.<run>.<node>, so that
// after a crash the next attempt can resume from it (Progress), and extends the step's ack
// deadline. The progress is deleted when the node completes.
func (s *Step) SaveProgress(ctx context.Context, v any) error {
	if s.run == nil {
		return errors.New("SaveProgress: the step is not run by a worker")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("SaveProgress: %w", err)
	}
	return s.run.saveProgress(ctx, b)
}

// Progress decodes the step's saved progress into v; ErrNoProgress when there is none.
func (s *Step) Progress(ctx context.Context, v any) error {
	if s.run == nil {
		return ErrNoProgress
	}
	b, err := s.run.loadProgress(ctx)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Resumed reports whether the step may have run before: a later attempt, a redelivery
// after a crash, a DLQ replay or a wake. Only then can Progress find something, so a
// handler that checks Resumed first saves the first attempt a read.
func (s *Step) Resumed() bool {
	if s.Attempt > 1 {
		return true
	}
	return s.run != nil && (s.run.meta.NumDelivered > 1 || s.run.env.Dispatch != workflow.DispatchFirst && s.run.env.Dispatch != "")
}

// Bind decodes the step's input into v.
func (s *Step) Bind(v any) error {
	if err := json.Unmarshal(s.Input, v); err != nil {
		return Permanent(fmt.Errorf("input of node %s does not fit %T: %w", s.Node, v, err))
	}
	return nil
}

// HandlerFunc runs one step. Its result becomes the node's output (marshalled to JSON; a
// json.RawMessage is kept as is).
type HandlerFunc func(ctx context.Context, s *Step) (any, error)

// PermanentError marks an error that retrying cannot fix: the step goes to the DLQ now.
type PermanentError struct {
	Err error
	// Reason is the DLQ reason, one line (default "permanent error").
	Reason string
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &PermanentError{Err: err}
}

// PermanentWithReason marks err as permanent, with reason as its DLQ reason (and so the
// run's reason, "node <name>: <reason>"), such as "budget exceeded".
func PermanentWithReason(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &PermanentError{Err: err, Reason: reason}
}

// RetryAfterError asks for the next attempt no sooner than After.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter marks err as retryable after d (for example a 429's Retry-After).
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &RetryAfterError{After: d, Err: err}
}

// ParkError asks to run the step again at Until, without spending an attempt; the step holds
// no worker slot meanwhile.
type ParkError struct{ Until time.Time }

func (e *ParkError) Error() string { return "parked until " + e.Until.UTC().Format(time.RFC3339) }

// Park returns the error a handler gives to be run again at t.
func Park(t time.Time) error { return &ParkError{Until: t} }

// classify returns how an error is handled.
type outcome int

const (
	outcomeRetry outcome = iota
	outcomePermanent
	outcomeRetryAfter
	outcomePark
)

func classify(err error) (outcome, time.Duration, time.Time) {
	var pe *PermanentError
	var ra *RetryAfterError
	var pk *ParkError
	switch {
	case errors.As(err, &pk):
		return outcomePark, 0, pk.Until
	case errors.As(err, &pe):
		return outcomePermanent, 0, time.Time{}
	case errors.As(err, &ra):
		return outcomeRetryAfter, max(ra.After, 0), time.Time{}
	}
	return outcomeRetry, 0, time.Time{}
}
