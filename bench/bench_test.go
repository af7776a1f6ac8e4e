package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestQuantiles(t *testing.T) {
	t.Parallel()
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i
	}
	for _, c := range []struct {
		name     string
		in       []time.Duration
		p50, p99 time.Duration
	}{
		{"empty", nil, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 7 * time.Millisecond},
		{"two", ms(9, 1), 1 * time.Millisecond, 9 * time.Millisecond},
		{"hundred, unsorted", ms(hundred...), 50 * time.Millisecond, 99 * time.Millisecond},
	} {
		if q := quantiles(c.in); q.P50 != c.p50 || q.P99 != c.p99 {
			t.Errorf("%s: quantiles = %v, %v; want %v, %v", c.name, q.P50, q.P99, c.p50, c.p99)
		}
	}
}

func TestInput(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 5, 14, 15, 100, 4096} {
		in := Input(n)
		if !json.Valid(in) {
			t.Errorf("Input(%d) = %q is not JSON", n, in)
		}
		if n > 14 && len(in) != n {
			t.Errorf("Input(%d) is %d bytes", n, len(in))
		}
	}
}

func TestEngineAndPipeline(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	dial := func(name string) (*nats.Conn, error) { return nats.Connect(srv.ClientURL(), nats.Name(name)) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var published, ended atomic.Int64
	names := workflow.MustNames("bench_test")
	res, err := Engine(ctx, dial, EngineConfig{Names: names, Runs: 30, Steps: 3, Concurrency: 4, Payload: 100, Sample: 20, Published: &published, Ended: &ended})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != 30 || res.Steps != 90 || res.Failed != 0 || res.Sampled != 20 || published.Load() != 30 || ended.Load() != 30 {
		t.Errorf("Engine: %+v (published %d, ended %d); want 30 runs, 90 steps, 20 node states sampled", res, published.Load(), ended.Load())
	}
	if res.Elapsed <= 0 || res.StepsPerSec() <= 0 || res.RunLatency.P50 <= 0 || res.RunLatency.P99 < res.RunLatency.P50 || res.StepLatency.P99 < res.StepLatency.P50 {
		t.Errorf("Engine: implausible figures %+v", res)
	}
	// The same workflow with its steps answered by a micro service.
	res, err = Engine(ctx, dial, EngineConfig{Names: workflow.MustNames("bench_svc"), Runs: 20, Steps: 3, Concurrency: 4, Sample: 10, Service: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != 20 || res.Steps != 60 || res.Failed != 0 || res.StepsPerSec() <= 0 {
		t.Errorf("Engine (Service): %+v; want 20 runs, 60 steps, none failed", res)
	}
	for _, m := range []Mode{HandLoop, LeaderLoop, RawChain} {
		var ended atomic.Int64
		res, err := Pipeline(ctx, dial, PipelineConfig{Name: PipelineName(names, m), Runs: 30, Steps: 3, Concurrency: 4, Mode: m, Ended: &ended})
		if err != nil {
			t.Fatalf("Pipeline (%s): %v", m, err)
		}
		if res.Runs != 30 || res.Steps != 90 || ended.Load() != 30 || res.StepsPerSec() <= 0 {
			t.Errorf("Pipeline (%s): %+v", m, res)
		}
	}

	// Everything is deleted.
	_, js := srv.Connect(t)
	for name := range js.StreamNames(ctx).Name() {
		t.Errorf("stream %s left behind", name)
	}
}

func ExampleInput() {
	fmt.Println(string(Input(0)))
	fmt.Println(string(Input(20)))
	// Output:
	// {}
	// {"payload":"xxxxxx"}
}
