package consumer

import (
	"time"

	"github.com/jetflow-dev/jetflow/breaker"
)

// Outcome is how one delivery of a step ended, as metrics count it.
type Outcome string

// Outcomes of a step delivery.
const (
	OutcomeSucceeded        Outcome = "succeeded"
	OutcomeRetried          Outcome = "retried"
	OutcomeDeadLettered     Outcome = "dead_lettered"
	OutcomeSkippedDuplicate Outcome = "skipped_duplicate"
	OutcomeFallback         Outcome = "fallback"
	OutcomeDeferredBreaker  Outcome = "deferred_breaker"
	// OutcomeSkipped is a node skipped by its `if`, or because every parent was skipped.
	OutcomeSkipped Outcome = "skipped"
)

// Observer receives what a worker does, for metrics and health. Every method must be cheap
// and safe for concurrent use; the metrics package implements it. Labels never include a run
// ID.
type Observer interface {
	// StepStarted is called when a handler starts; wait is the time since the step message
	// was stored (schedule-to-start).
	StepStarted(workflow, node, nodeType string, wait time.Duration)
	// StepFinished is called once per delivery that reached an outcome; took is the handler's
	// run time (zero when no handler ran).
	StepFinished(workflow, node, nodeType string, outcome Outcome, took time.Duration)
	// StepRerun is called when a handler runs again after a crash or an ignored timeout.
	StepRerun(workflow, node string)
	// HandlerAbandoned is called when a handler ignored its timeout and was left running.
	HandlerAbandoned(workflow, node string)
	// InFlight is called with +1 when a step starts and -1 when it ends.
	InFlight(delta int)
	// RunStarted is called once per run, across the cluster: by the worker that takes the
	// first delivery of the run's first root node.
	RunStarted(workflow string)
	// RunFinished is called once per run: by the worker that ended it (status completed or
	// failed), and for a cancelled run by the worker that leads the live workers (the
	// lowest ID) when it sees the cancel.
	RunFinished(workflow, status string, took time.Duration)
	// BreakerState is called when this worker sees a breaker key change state.
	BreakerState(key string, state breaker.State)
	// BreakerCall is called for each call a breaker admitted that counts for it: failed is a
	// retryable failure; took is the handler's run time.
	BreakerCall(key string, failed bool, took time.Duration)
	// CostSaved is called when a run resumes after a failure (a re-run after a crash, a DLQ
	// replay) with what its done nodes' model calls cost: a run without checkpoints would
	// pay it again.
	CostSaved(workflow string, usd float64)
}

// nopObserver is the default Observer.
type nopObserver struct{}

func (nopObserver) StepStarted(string, string, string, time.Duration)           {}
func (nopObserver) StepFinished(string, string, string, Outcome, time.Duration) {}
func (nopObserver) StepRerun(string, string)                                    {}
func (nopObserver) HandlerAbandoned(string, string)                             {}
func (nopObserver) InFlight(int)                                                {}
func (nopObserver) RunStarted(string)                                           {}
func (nopObserver) RunFinished(string, string, time.Duration)                   {}
func (nopObserver) BreakerState(string, breaker.State)                          {}
func (nopObserver) BreakerCall(string, bool, time.Duration)                     {}
func (nopObserver) CostSaved(string, float64)                                   {}
