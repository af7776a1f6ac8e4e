package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Node types of the test workflows.
const (
	typeOK    = "okay"  // always succeeds
	typeFlaky = "flaky" // fails twice per run, then succeeds
	typeBad   = "bad"   // fails permanently until fixed is set
	typeBlock = "block" // runs until its run is cancelled
)

// fixture is a NATS server set up for jetflow, with a registry, Metrics, a producer that
// counts starts, and the test workflows applied:
//
//	ok:    a → b (okay)
//	flaky: x (flaky, retried twice)
//	perm:  p (bad) → q (okay)
//	hang:  h (block)
type fixture struct {
	t       *testing.T
	srv     *natstest.Server
	names   workflow.Names
	nc      *nats.Conn
	js      jetstream.JetStream
	store   *checkpoint.Store
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	prod    *producer.Producer
	fixed   atomic.Bool // makes the bad type succeed (for replays)

	mu    sync.Mutex
	flaky map[string]int // failures so far, by run
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 2*time.Second, typeOK, typeFlaky, typeBad, typeBlock)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{Version: "test", JetStream: js, Names: names})
	f := &fixture{t: t, srv: srv, names: names, nc: nc, js: js, store: store, reg: reg, metrics: m, flaky: map[string]int{},
		prod: producer.New(js, store, producer.Config{Names: names})}
	fast := workflow.Retry{MaxAttempts: 5, Initial: workflow.Duration(10 * time.Millisecond), Max: workflow.Duration(20 * time.Millisecond)}
	ok := workflow.New("ok")
	ok.Node("a", typeOK)
	ok.Node("b", typeOK, "a")
	flaky := workflow.New("flaky")
	flaky.Node("x", typeFlaky).WithRetry(fast)
	perm := workflow.New("perm")
	perm.Node("p", typeBad)
	perm.Node("q", typeOK, "p")
	hang := workflow.New("hang")
	hang.Node("h", typeBlock)
	gate := workflow.New("gate")
	gate.Node("g", workflow.WaitType).With = map[string]any{"signal": "approve"}
	gate.Node("after", typeOK, "g")
	for _, w := range []*workflow.Workflow{ok, flaky, perm, hang, gate} {
		if err := w.Validate(workflow.ValidateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.ApplyWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// worker runs a worker with the test handlers and f.metrics as its observer until the test
// ends.
func (f *fixture) worker() *consumer.Worker {
	f.t.Helper()
	nc, js := f.srv.Connect(f.t)
	store, err := checkpoint.Open(context.Background(), js, f.names)
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := consumer.New(js, store, consumer.Config{Names: f.names, Observer: f.metrics, PollWait: 200 * time.Millisecond,
		DrainTimeout: 5 * time.Second, Version: "test"})
	if err != nil {
		f.t.Fatal(err)
	}
	w.Handle(typeOK, func(context.Context, *consumer.Step) (any, error) { return map[string]bool{"ok": true}, nil })
	w.Handle(typeFlaky, func(_ context.Context, s *consumer.Step) (any, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.flaky[s.RunID] < 2 {
			f.flaky[s.RunID]++
			return nil, fmt.Errorf("flake %d", f.flaky[s.RunID])
		}
		return "steady", nil
	})
	w.Handle(typeBad, func(context.Context, *consumer.Step) (any, error) {
		if f.fixed.Load() {
			return "fixed", nil
		}
		// The DLQ header keeps errors on one line: the secret is past the 200 characters shown.
		return nil, consumer.Permanent(errors.New("401 unauthorized: the key was revoked\nresponse body: {\"pad\": \"" +
			strings.Repeat("x", 200) + "\", \"secret\": \"s3cr3t\"}"))
	})
	w.Handle(workflow.WaitType, func(context.Context, *consumer.Step) (any, error) {
		return nil, consumer.Permanent(errors.New("a wait node runs no handler"))
	})
	w.Handle(typeBlock, func(ctx context.Context, _ *consumer.Step) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("worker: %v", err)
		}
		nc.Close()
	})
	return w
}

// start starts a run of wf.
func (f *fixture) start(wf string) string {
	f.t.Helper()
	id, err := f.prod.Start(context.Background(), wf, []byte(`{"n": 1}`), producer.StartOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	// A worker records the run when it takes the start request; the API knows it from then.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.store.WaitRun(ctx, id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// waitEnd waits for the run to end with status want.
func (f *fixture) waitEnd(id, want string) {
	f.t.Helper()
	var got string
	natstest.Eventually(f.t, 30*time.Second, func() bool {
		end, _, err := f.store.End(context.Background(), id)
		if err == nil && end != nil {
			got = end.Status
		}
		return got == want
	}, "run %s did not end %s (got %q)", id, want, got)
}

// server runs a metrics.Server on a free loopback port until the test ends and returns its
// base URL (without the trailing slash).
func (f *fixture) server(cfg metrics.ServerConfig) (*metrics.Server, string) {
	f.t.Helper()
	return f.serverOn(f.js, cfg)
}

// serverOn is server talking to NATS through js.
func (f *fixture) serverOn(js jetstream.JetStream, cfg metrics.ServerConfig) (*metrics.Server, string) {
	f.t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Names = f.names
	cfg.Gatherer = f.reg
	cfg.EventInterval = 200 * time.Millisecond
	srv, err := metrics.NewServer(js, f.store, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	url, err := srv.Listen()
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("server: %v", err)
		}
	})
	return srv, strings.TrimSuffix(url, "/")
}

// request is one HTTP request of a test.
type request struct {
	method, url, body string
	header            map[string]string
}

// do sends r and returns the status and body.
func do(t *testing.T, r request) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	return do(t, request{method: http.MethodGet, url: url})
}
