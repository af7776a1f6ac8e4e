package metrics_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/metrics"
)

// Metrics counts what a worker reports through consumer.Observer; give it a registry of its
// own and serve that registry (metrics.ServerConfig.Gatherer).
func Example() {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: "v1.0.0"})
	// A worker calls these through consumer.Config.Observer.
	m.RunStarted("orders")
	m.StepFinished("orders", "charge", "http", consumer.OutcomeRetried, 120*time.Millisecond)
	m.StepFinished("orders", "charge", "http", consumer.OutcomeSucceeded, 80*time.Millisecond)
	m.RunFinished("orders", "completed", 2*time.Second)
	m.LLMCall("openai", "gpt-4o-mini", "ok", 1200, 300, 0.00036) // an llm node's call (llm.Observer)

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if !strings.HasSuffix(mf.GetName(), "_total") {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			fmt.Printf("%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), s.GetCounter().GetValue())
		}
	}
	// Output:
	// jetflow_cost_saved_usd_total{} 0
	// jetflow_llm_calls_total{outcome=ok,provider=openai} 1
	// jetflow_llm_cost_usd_total{model=gpt-4o-mini,provider=openai} 0.00036
	// jetflow_llm_tokens_total{direction=input,model=gpt-4o-mini,provider=openai} 1200
	// jetflow_llm_tokens_total{direction=output,model=gpt-4o-mini,provider=openai} 300
	// jetflow_llm_wasted_cost_usd_total{} 0
	// jetflow_runs_finished_total{status=completed,workflow=orders} 1
	// jetflow_runs_started_total{workflow=orders} 1
	// jetflow_steps_total{node=charge,outcome=retried,workflow=orders} 1
	// jetflow_steps_total{node=charge,outcome=succeeded,workflow=orders} 1
}

// printActuator prints what the health monitor asks of the worker.
type printActuator struct{}

func (printActuator) SetTypeConcurrency(typ string, n int) {
	fmt.Printf("run %s at concurrency %d\n", typ, n)
}

func (printActuator) PauseType(typ string, until time.Time) {
	fmt.Printf("pause %s until %s\n", typ, until.Format(time.TimeOnly))
}

func (printActuator) ResumeType(typ string) { fmt.Printf("resume %s\n", typ) }

// Health judges node types over a sliding window and acts through an Actuator, which the
// worker implements: a degraded type runs at half concurrency, an unhealthy one is paused.
func ExampleHealth() {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	h, _ := metrics.NewHealth(prometheus.NewRegistry(), printActuator{}, metrics.HealthConfig{
		Concurrency: 16,
		Clock:       func() time.Time { return now },
	})
	// 30 % of 20 steps failed: degraded.
	for i := range 20 {
		h.Observe(metrics.ScopeType, "http", i < 6, 200*time.Millisecond)
	}
	h.Evaluate()
	// 26 of 40 failed: unhealthy.
	for range 20 {
		h.Observe(metrics.ScopeType, "http", true, 200*time.Millisecond)
	}
	h.Evaluate()
	fmt.Println(h.Status(metrics.ScopeType, "http"))
	// Output:
	// run http at concurrency 8
	// pause http until 12:00:30
	// unhealthy
}
