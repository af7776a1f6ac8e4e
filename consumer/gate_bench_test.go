package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/workflow"
)

// BenchmarkGate is what protection adds to a step's path while the dependency is healthy:
// the gate before the handler (breaker, rate limit) and the breaker's report after it,
// exactly as a delivery runs them. The Set has no bucket (nil): the healthy path must not
// need one. Cases: a node with no protection (what every other step pays), a node with a
// breaker block and a rate limit far above the load, and an http node (its default breaker
// is keyed by the URL's host, parsed per step) with the same rate limit.
func BenchmarkGate(b *testing.B) {
	rate := &workflow.Rate{Key: "api", PerSecond: 1e9, Burst: 1_000_000}
	for _, bc := range []struct {
		name string
		node workflow.Node
		with map[string]any
	}{
		{"unprotected", workflow.Node{Name: "call", Type: "call"}, nil},
		{"breaker+rate", workflow.Node{Name: "call", Type: "call", Breaker: &workflow.Breaker{}, Rate: rate}, nil},
		{"http+rate", workflow.Node{Name: "call", Type: "http", Rate: rate}, map[string]any{"url": "https://api.example.com/v1/summarize?lang=en"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := &Worker{cfg: Config{Observer: nopObserver{}}}
			w.breakers = breaker.New(nil, "bench", breaker.Options{})
			w.limits = breaker.NewLimits(func(string) int { return 2 })
			node := bc.node
			node.With = bc.with
			s := &stepRun{w: w, ts: &typeState{ackWait: 30 * time.Second, maxDeliver: 20}, node: &node,
				env: &workflow.Envelope{RunID: "r", Workflow: "wf", Node: "call"}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				handled, err := s.gate(ctx)
				if handled || err != nil {
					b.Fatal("the gate refused a healthy call")
				}
				s.reportBreaker(ctx, s.ticket, s.bs, nil)
				s.ticket = nil
			}
		})
	}
}
