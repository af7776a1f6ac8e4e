package metrics

import (
	"cmp"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Default histogram buckets, in seconds.
var (
	// DefaultStepBuckets are the buckets of step durations and schedule-to-start waits:
	// 5 ms to 10 min.
	DefaultStepBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// DefaultRunBuckets are the buckets of run durations: 50 ms to 6 h.
	DefaultRunBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600}
)

// Options tunes Metrics. Zero fields take the defaults.
type Options struct {
	// Version is the jetflow_build_info version label (default "dev").
	Version string
	// StepBuckets are the histogram buckets of step durations and schedule-to-start waits
	// (default DefaultStepBuckets).
	StepBuckets []float64
	// RunBuckets are the histogram buckets of run durations (default DefaultRunBuckets).
	RunBuckets []float64
	// JetStream, when set, adds the series read from the broker at scrape time: backlog per
	// consumer and DLQ depth (default: none).
	JetStream jetstream.JetStream
	// Names of the installation, for those series (default prefix "jetflow").
	Names workflow.Names
	// ScrapeTimeout bounds the broker reads of one scrape (default 2 s).
	ScrapeTimeout time.Duration
	// Health, when set, is fed every step outcome and breaker state (default: none).
	Health *Health
}

// Metrics holds jetflow's Prometheus series. It implements consumer.Observer (give it to a
// worker as consumer.Config.Observer): the workers count run starts and ends themselves, once
// per run across the cluster. Every method is cheap and safe for concurrent use.
type Metrics struct {
	runsStarted      *prometheus.CounterVec
	runsFinished     *prometheus.CounterVec
	runDuration      *prometheus.HistogramVec
	steps            *prometheus.CounterVec
	stepDuration     *prometheus.HistogramVec
	scheduleToStart  *prometheus.HistogramVec
	reruns           *prometheus.CounterVec
	inFlight         prometheus.Gauge
	breakerState     *prometheus.GaugeVec
	breakerTransits  *prometheus.CounterVec
	handlerAbandoned *prometheus.CounterVec
	llmTokens        *prometheus.CounterVec
	llmCost          *prometheus.CounterVec
	llmCalls         *prometheus.CounterVec
	llmWasted        prometheus.Counter
	costSaved        prometheus.Counter

	health *Health

	mu       sync.Mutex
	breakers map[string]breaker.State // last state seen per key
}

var _ consumer.Observer = (*Metrics)(nil)

// New registers jetflow's series with reg and returns them. It panics if reg already holds
// them (as prometheus.MustRegister does): give each Metrics its own registry.
func New(reg prometheus.Registerer, opts Options) *Metrics {
	opts.Version = cmp.Or(opts.Version, "dev")
	if opts.StepBuckets == nil {
		opts.StepBuckets = DefaultStepBuckets
	}
	if opts.RunBuckets == nil {
		opts.RunBuckets = DefaultRunBuckets
	}
	if opts.Names.Prefix() == "" {
		opts.Names = workflow.MustNames("")
	}
	m := &Metrics{
		runsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_runs_started_total", Help: "Runs started, by workflow.",
		}, []string{"workflow"}),
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_runs_finished_total", Help: "Runs ended by this worker, by workflow and status (completed, failed).",
		}, []string{"workflow", "status"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jetflow_run_duration_seconds", Help: "Time from a run's start to its end.", Buckets: opts.RunBuckets,
		}, []string{"workflow", "status"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_steps_total",
			Help: "Step deliveries by outcome: succeeded, retried, dead_lettered, skipped_duplicate, fallback, deferred_breaker.",
		}, []string{"workflow", "node", "outcome"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jetflow_step_duration_seconds", Help: "Handler run time of step deliveries that ran a handler, by outcome.",
			Buckets: opts.StepBuckets,
		}, []string{"workflow", "node", "outcome"}),
		scheduleToStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jetflow_step_schedule_to_start_seconds", Help: "Time from a step message being stored to its handler starting.",
			Buckets: opts.StepBuckets,
		}, []string{"node_type"}),
		reruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_step_reruns_total", Help: "Handlers that ran again after a crash or an ignored timeout.",
		}, []string{"workflow", "node"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetflow_steps_in_flight", Help: "Steps this worker is processing now.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetflow_breaker_state", Help: "Circuit breaker state as this worker sees it: 0 closed, 1 half-open, 2 open.",
		}, []string{"key"}),
		breakerTransits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_breaker_transitions_total", Help: "Circuit breaker state changes seen by this worker, by the state entered.",
		}, []string{"key", "to"}),
		handlerAbandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_handler_abandoned_total", Help: "Handlers that ignored their timeout and were left to the ack wait.",
		}, []string{"workflow", "node"}),
		llmTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_llm_tokens_total", Help: "Tokens of llm calls answered by a provider, by provider, model and direction (input, output).",
		}, []string{"provider", "model", "direction"}),
		llmCost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_llm_cost_usd_total", Help: "What llm calls cost, in USD, by provider and model (the providers file's prices).",
		}, []string{"provider", "model"}),
		llmCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_llm_calls_total", Help: "llm calls by provider and outcome: ok, error, fallback (answered by a provider after the first), cached.",
		}, []string{"provider", "outcome"}),
		llmWasted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetflow_llm_wasted_cost_usd_total", Help: "Cost of llm calls whose answer was lost (the worker died before the checkpoint), in USD.",
		}),
		costSaved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetflow_cost_saved_usd_total", Help: "Model cost of done nodes that resumed runs (after a crash, a DLQ replay) did not pay again, in USD.",
		}),
		health:   opts.Health,
		breakers: map[string]breaker.State{},
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetflow_build_info", Help: "Always 1; the labels say which jetflow and Go built this process.",
	}, []string{"version", "go_version"})
	buildInfo.WithLabelValues(opts.Version, runtime.Version()).Set(1)
	reg.MustRegister(m.runsStarted, m.runsFinished, m.runDuration, m.steps, m.stepDuration, m.scheduleToStart,
		m.reruns, m.inFlight, m.breakerState, m.breakerTransits, m.handlerAbandoned, buildInfo,
		m.llmTokens, m.llmCost, m.llmCalls, m.llmWasted, m.costSaved)
	if opts.JetStream != nil {
		reg.MustRegister(NewBrokerCollector(opts.JetStream, opts.Names, cmp.Or(opts.ScrapeTimeout, 2*time.Second)))
	}
	return m
}

// RunStarted counts a new run of workflow. A worker calls it once per run (consumer.Observer);
// a process with no worker may give it to producer.Config.OnStart instead (never both in one
// registry: the run would count twice).
func (m *Metrics) RunStarted(workflow string) {
	m.runsStarted.WithLabelValues(workflow).Inc()
}

// StepStarted records the schedule-to-start wait of a step whose handler starts.
func (m *Metrics) StepStarted(_, _, nodeType string, wait time.Duration) {
	m.scheduleToStart.WithLabelValues(nodeType).Observe(max(wait, 0).Seconds())
}

// StepFinished counts one delivery's outcome and, when a handler ran, its duration. It feeds
// the health monitor with the outcomes that say something about the handler: succeeded and
// fallback are successes, retried and dead_lettered failures.
func (m *Metrics) StepFinished(workflow, node, nodeType string, outcome consumer.Outcome, took time.Duration) {
	m.steps.WithLabelValues(workflow, node, string(outcome)).Inc()
	switch outcome {
	case consumer.OutcomeSkippedDuplicate, consumer.OutcomeDeferredBreaker:
		return
	}
	m.stepDuration.WithLabelValues(workflow, node, string(outcome)).Observe(took.Seconds())
	if m.health != nil {
		failed := outcome == consumer.OutcomeRetried || outcome == consumer.OutcomeDeadLettered
		m.health.Observe(ScopeType, nodeType, failed, took)
	}
}

// StepRerun counts a handler that runs again after a crash or an ignored timeout.
func (m *Metrics) StepRerun(workflow, node string) {
	m.reruns.WithLabelValues(workflow, node).Inc()
}

// HandlerAbandoned counts a handler left running past its timeout.
func (m *Metrics) HandlerAbandoned(workflow, node string) {
	m.handlerAbandoned.WithLabelValues(workflow, node).Inc()
}

// InFlight moves the in-flight gauge by delta.
func (m *Metrics) InFlight(delta int) {
	m.inFlight.Add(float64(delta))
}

// RunFinished counts a run this worker ended, with its duration.
func (m *Metrics) RunFinished(workflow, status string, took time.Duration) {
	m.runsFinished.WithLabelValues(workflow, status).Inc()
	m.runDuration.WithLabelValues(workflow, status).Observe(max(took, 0).Seconds())
}

// BreakerState records a breaker key's state and counts the change (a first sighting of a
// closed key is not a change).
func (m *Metrics) BreakerState(key string, state breaker.State) {
	m.mu.Lock()
	prev, seen := m.breakers[key]
	m.breakers[key] = state
	m.mu.Unlock()
	m.breakerState.WithLabelValues(key).Set(float64(state))
	if (seen && prev != state) || (!seen && state != breaker.Closed) {
		m.breakerTransits.WithLabelValues(key, state.String()).Inc()
	}
	if m.health != nil {
		m.health.BreakerState(key, state)
	}
}

// BreakerCall feeds the health monitor with one call guarded by the breaker key: whether it
// failed and how long it took. The worker calls it where it reports a breaker outcome, when
// it knows the key; without it, per-key health follows the breaker's state only.
func (m *Metrics) BreakerCall(key string, failed bool, took time.Duration) {
	if m.health != nil {
		m.health.Observe(ScopeBreaker, key, failed, took)
	}
}

// LLMCall counts one llm call (llm.Observer): its outcome, and for an answered call its
// tokens and cost.
func (m *Metrics) LLMCall(provider, model, outcome string, inputTokens, outputTokens int64, usd float64) {
	m.llmCalls.WithLabelValues(provider, outcome).Inc()
	if outcome == "error" || outcome == "cached" {
		return
	}
	m.llmTokens.WithLabelValues(provider, model, "input").Add(float64(inputTokens))
	m.llmTokens.WithLabelValues(provider, model, "output").Add(float64(outputTokens))
	m.llmCost.WithLabelValues(provider, model).Add(usd)
}

// LLMWasted counts the cost of an llm answer that was lost (llm.Observer).
func (m *Metrics) LLMWasted(usd float64) { m.llmWasted.Add(usd) }

// CostSaved counts the model cost a resumed run did not pay again (consumer.Observer).
func (m *Metrics) CostSaved(_ string, usd float64) { m.costSaved.Add(usd) }
