// Package tracing carries W3C trace context through step messages, so a run is one trace:
// the producer's span is the parent of the root steps' spans, and each step's span the parent
// of the steps it releases. Spans are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT
// (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and nothing happens when it is not.
package tracing

import (
	"context"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// propagator reads and writes the traceparent header; it holds no state.
var propagator = propagation.TraceContext{}

// Enabled reports whether the environment asks for OTLP export.
func Enabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup returns a tracer provider that exports over OTLP/HTTP (configured by the standard
// OTEL_EXPORTER_OTLP_* variables), and its shutdown func, which flushes. When export is not
// enabled it returns (nil, a no-op, nil): callers then trace nothing.
func Setup(ctx context.Context, service, version string) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource(service, version)),
	)
	return tp, tp.Shutdown, nil
}

// Inject writes the span context of ctx into h as a traceparent header (nothing when ctx has
// no span).
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx with the remote span context of h's traceparent, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Step attribute keys.
const (
	AttrWorkflow = attribute.Key("jetflow.workflow")
	AttrNode     = attribute.Key("jetflow.node")
	AttrRun      = attribute.Key("jetflow.run_id")
	AttrAttempt  = attribute.Key("jetflow.attempt")
)
