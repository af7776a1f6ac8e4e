package consumer

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestRunIsOneTrace: traceparent travels in step headers, so the start and every step of a
// run share one trace, each step a child of the step (or start) that released it.
func TestRunIsOneTrace(t *testing.T) {
	t.Parallel()
	f := setup(t, "work")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	wf := workflow.New("traced")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	wf.Node("c", "work", "b")
	f.apply(wf)
	f.worker(Config{Tracer: tp}, func(w *Worker) {
		w.Handle("work", func(context.Context, *Step) (any, error) { return nil, nil })
	})
	p := producer.New(f.js, f.store, producer.Config{Names: f.names, Tracer: tp})
	id, err := p.Start(context.Background(), "traced", nil, producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s", end.Status)
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	natstest.Eventually(t, 10*time.Second, func() bool {
		for _, s := range rec.Ended() {
			byName[s.Name()] = s
		}
		return len(byName) >= 4
	}, "spans missing")
	run, a, b, c := byName["run traced"], byName["step traced.a"], byName["step traced.b"], byName["step traced.c"]
	if run == nil || a == nil || b == nil || c == nil {
		t.Fatalf("spans %v", byName)
	}
	trace := run.SpanContext().TraceID()
	for _, s := range []sdktrace.ReadOnlySpan{a, b, c} {
		if s.SpanContext().TraceID() != trace {
			t.Fatalf("span %s is in another trace", s.Name())
		}
	}
	if a.Parent().SpanID() != run.SpanContext().SpanID() || b.Parent().SpanID() != a.SpanContext().SpanID() || c.Parent().SpanID() != b.SpanContext().SpanID() {
		t.Fatal("step spans are not chained run → a → b → c")
	}
	attempt := false
	for _, kv := range b.Attributes() {
		if kv.Key == tracing.AttrAttempt && kv.Value.AsInt64() == 1 {
			attempt = true
		}
	}
	if !attempt {
		t.Fatalf("span b has no attempt attribute: %v", b.Attributes())
	}
}
