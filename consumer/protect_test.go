package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	jfsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// dependency is a real HTTP server whose health the test switches, recording when each call
// started.
type dependency struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []time.Time
	status atomic.Int32
	after  atomic.Int32 // Retry-After seconds on a 429/503, when set
}

func newDependency(t *testing.T) *dependency {
	d := &dependency{}
	d.status.Store(http.StatusOK)
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.calls = append(d.calls, time.Now())
		d.mu.Unlock()
		code := int(d.status.Load())
		if a := d.after.Load(); a > 0 && (code == 429 || code == 503) {
			w.Header().Set("Retry-After", fmt.Sprint(a))
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(d.Close)
	return d
}

// between counts the calls that started in [from, to).
func (d *dependency) between(from, to time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if !c.Before(from) && c.Before(to) {
			n++
		}
	}
	return n
}

// callHandler calls the dependency; 429/503 with Retry-After become RetryAfter, other
// failures are retryable errors.
func callHandler(d *dependency) HandlerFunc {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context, s *Step) (any, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			if ra := resp.Header.Get("Retry-After"); ra != "" {
				var secs int
				fmt.Sscan(ra, &secs)
				return nil, RetryAfter(time.Duration(secs)*time.Second, fmt.Errorf("status %d", resp.StatusCode))
			}
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp.StatusCode, nil
	}
}

// trip reads the shared trip of a breaker key, or nil.
func (f *fixture) trip(key string) (*breaker.Trip, time.Time) {
	kv, err := f.js.KeyValue(context.Background(), f.names.BreakersBucket())
	if err != nil {
		f.t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), breaker.BucketKey(key))
	if err != nil {
		return nil, time.Time{}
	}
	var t breaker.Trip
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		f.t.Fatal(err)
	}
	return &t, e.Created()
}

// TestBreakerSharedAcrossWorkers: a failing dependency trips the breaker; every worker stops
// calling it (no call but the half-open probe until it recovers), the node type's consumer is
// paused, attempts are not burnt, and after recovery every run completes with the DLQ empty.
func TestBreakerSharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, "call")
	dep := newDependency(t)
	dep.status.Store(http.StatusInternalServerError)
	const openFor = 2 * time.Second
	wf := workflow.New("guarded")
	wf.Node("call", "call").WithRetry(workflow.Retry{MaxAttempts: 30, Initial: workflow.Duration(20 * time.Millisecond), Max: workflow.Duration(50 * time.Millisecond)})
	// An explicit key with scope "type": the key names the dependency, the scope says it
	// covers the whole type, so a trip pauses the type's consumer.
	const key = "call-api"
	wf.Nodes[0].Breaker = &workflow.Breaker{Key: key, Scope: "type", ConsecutiveFailures: 3, OpenFor: workflow.Duration(openFor)}
	f.apply(wf)
	for range 2 {
		f.worker(Config{}, func(w *Worker) { w.Handle("call", callHandler(dep)) })
	}
	var ids []string
	for i := range 8 {
		ids = append(ids, f.start("guarded", fmt.Sprintf(`{"i":%d}`, i)))
	}
	var first *breaker.Trip
	var trippedAt time.Time
	natstest.Eventually(t, 20*time.Second, func() bool { first, trippedAt = f.trip(key); return first != nil }, "the breaker never opened")

	// The worker that won the trip paused the type's consumer until the trip ends.
	natstest.Eventually(t, 5*time.Second, func() bool {
		c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer("call"))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.Paused
	}, "the consumer of the tripped type was not paused")

	// The probe after the first open period fails (the dependency is still down): the
	// breaker opens again. Until then only that one probe reached the dependency.
	var second *breaker.Trip
	natstest.Eventually(t, 20*time.Second, func() bool {
		second, _ = f.trip(key)
		return second != nil && second.OpenUntil.After(first.OpenUntil)
	}, "the breaker did not re-open after a failed probe")
	probeFailedAt := second.OpenUntil.Add(-openFor)
	if n := dep.between(trippedAt.Add(time.Second), first.OpenUntil); n != 0 {
		t.Fatalf("%d calls reached the dependency while the breaker was open", n)
	}
	if n := dep.between(first.OpenUntil, probeFailedAt.Add(time.Millisecond)); n != 1 {
		t.Fatalf("%d calls in the half-open window, want exactly 1 probe", n)
	}

	dep.status.Store(http.StatusOK)
	for _, id := range ids {
		if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
		if st := f.node(id, "call"); st.Attempts > 6 {
			t.Fatalf("run %s used %d attempts: the outage burnt retries", id, st.Attempts)
		}
	}
	if entries, _ := listDLQ(f); len(entries) != 0 {
		t.Fatalf("DLQ holds %d entries after recovery, want 0", len(entries))
	}
}

// TestRetryAfterIsClusterWide: a Retry-After from the dependency closes the key to every
// worker until the cool-down ends: the breaker's key, or <workflow>.<node> for a node with
// no breaker block.
func TestRetryAfterIsClusterWide(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, key string
		breaker   *workflow.Breaker
	}{
		{"breaker key", "api.example", &workflow.Breaker{Key: "api.example"}},
		{"no breaker", "polite.call", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, "call")
			dep := newDependency(t)
			dep.status.Store(http.StatusTooManyRequests)
			dep.after.Store(2)
			wf := workflow.New("polite")
			wf.Node("call", "call").WithRetry(workflow.Retry{MaxAttempts: 10, Initial: workflow.Duration(10 * time.Millisecond)})
			wf.Nodes[0].Breaker = tc.breaker
			f.apply(wf)
			var workers []*Worker
			for range 2 {
				w, _, _ := f.worker(Config{}, func(w *Worker) { w.Handle("call", callHandler(dep)) })
				workers = append(workers, w)
			}
			first := f.start("polite", `{"first":true}`)
			var cool *breaker.Trip
			natstest.Eventually(t, 20*time.Second, func() bool { cool, _ = f.trip(tc.key); return cool != nil }, "no cool-down was set")
			if cool.Reason != "retry-after" {
				t.Fatalf("trip reason %q, want retry-after", cool.Reason)
			}
			// Both workers know the key is cooling down before more runs start.
			natstest.Eventually(t, 5*time.Second, func() bool {
				for _, w := range workers {
					if w.Breakers() == nil || len(w.Breakers().Open()) == 0 {
						return false
					}
				}
				return true
			}, "a worker did not see the cool-down")
			dep.status.Store(http.StatusOK)
			startRuns := time.Now()
			var ids []string
			for i := range 5 {
				ids = append(ids, f.start("polite", fmt.Sprintf(`{"i":%d}`, i)))
			}
			for _, id := range append(ids, first) {
				if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
					t.Fatalf("run %s ended %s", id, end.Status)
				}
			}
			if n := dep.between(startRuns, cool.OpenUntil); n != 0 {
				t.Fatalf("%d calls before the cool-down ended", n)
			}
		})
	}
}

// TestOnlyRetryableFailuresTrip: permanent errors, bad expressions and a run's cancellation
// do not count against the breaker: far more of them than the threshold leave it closed,
// with no failure counted.
func TestOnlyRetryableFailuresTrip(t *testing.T) {
	t.Parallel()
	f := setup(t, "strict")
	wf := workflow.New("strict")
	wf.Node("a", "strict").WithRetry(workflow.Retry{MaxAttempts: 3, Initial: workflow.Duration(5 * time.Millisecond)})
	wf.Nodes[0].Breaker = &workflow.Breaker{Key: "strict-api", ConsecutiveFailures: 2}
	wf.Nodes[0].With = map[string]any{"q": "${{ input.missing.field }}"}
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("strict", func(context.Context, *Step) (any, error) { return nil, Permanent(errors.New("400 bad request")) })
	})
	var ids []string
	for i := range 3 {
		ids = append(ids, f.start("strict", fmt.Sprintf(`{"i":%d}`, i)))                       // the expression fails
		ids = append(ids, f.start("strict", fmt.Sprintf(`{"i":%d,"missing":{"field":1}}`, i))) // the handler fails permanently
	}
	for _, id := range ids {
		if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndFailed {
			t.Fatalf("run %s ended %s, want failed", id, end.Status)
		}
	}
	if trip, _ := f.trip("strict-api"); trip != nil {
		t.Fatalf("permanent failures tripped the breaker: %+v", trip)
	}
	kv, err := f.js.KeyValue(context.Background(), f.names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(context.Background(), "failures/strict-api"); err == nil {
		t.Fatalf("permanent failures were counted: %s", e.Value())
	}
	if entries, _ := listDLQ(f); len(entries) != len(ids) {
		t.Fatalf("DLQ holds %d entries, want %d", len(entries), len(ids))
	}
}

// TestFallbackChainWhileOpen: with the breaker open, the node's fallbacks run in order; the
// recorded result comes from the first that works and is marked as a fallback.
func TestFallbackChainWhileOpen(t *testing.T) {
	t.Parallel()
	f := setup(t, "primary", "secondary", "static")
	wf := workflow.New("llm")
	wf.Node("answer", "primary").WithRetry(workflow.Retry{MaxAttempts: 10, Initial: workflow.Duration(10 * time.Millisecond)})
	wf.Nodes[0].Breaker = &workflow.Breaker{Key: "provider-a", ConsecutiveFailures: 2, OpenFor: workflow.Duration(time.Minute)}
	wf.Nodes[0].Fallback = workflow.Fallback{"secondary", "static"}
	f.apply(wf)
	var primary, secondary atomic.Int32
	f.worker(Config{}, func(w *Worker) {
		w.Handle("primary", func(ctx context.Context, s *Step) (any, error) {
			primary.Add(1)
			return nil, errors.New("provider A is down")
		})
		w.Handle("secondary", func(ctx context.Context, s *Step) (any, error) {
			secondary.Add(1)
			return nil, errors.New("provider B is down too")
		})
		w.Handle("static", func(ctx context.Context, s *Step) (any, error) {
			return map[string]string{"answer": "cached", "why": s.Fallback}, nil
		})
	})
	id := f.start("llm", `{}`)
	if end := f.waitEnd(id, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	st := f.node(id, "answer")
	var out struct{ Answer, Why string }
	if err := json.Unmarshal(st.Output, &out); err != nil || !st.Fallback || out.Answer != "cached" {
		t.Fatalf("node state %+v: want a fallback result from static", st)
	}
	if primary.Load() != 2 || secondary.Load() != 1 || out.Why != "breaker provider-a is open" {
		t.Fatalf("primary ran %d times (want 2, then the breaker opened), secondary %d (want 1), why %q", primary.Load(), secondary.Load(), out.Why)
	}
	// A run started while the breaker is open goes straight to the fallbacks.
	id2 := f.start("llm", `{"second":true}`)
	if end := f.waitEnd(id2, 30*time.Second); end.Status != checkpoint.EndCompleted || !f.node(id2, "answer").Fallback {
		t.Fatalf("second run: %s, fallback %v", end.Status, f.node(id2, "answer").Fallback)
	}
	if primary.Load() != 2 {
		t.Fatalf("primary ran %d times, want no call while open", primary.Load())
	}
}

// TestFallbackWhenAttemptsExhausted: attempts used up, the fallback answers instead of the DLQ.
func TestFallbackWhenAttemptsExhausted(t *testing.T) {
	t.Parallel()
	f := setup(t, "flaky", "static")
	wf := workflow.New("exhaust")
	wf.Node("a", "flaky").WithRetry(workflow.Retry{MaxAttempts: 2, Initial: workflow.Duration(5 * time.Millisecond)})
	wf.Nodes[0].Fallback = workflow.Fallback{"static"}
	f.apply(wf)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("flaky", func(context.Context, *Step) (any, error) { return nil, errors.New("nope") })
		w.Handle("static", func(ctx context.Context, s *Step) (any, error) { return s.Fallback, nil })
	})
	id := f.start("exhaust", `{}`)
	if end := f.waitEnd(id, 20*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s", end.Status)
	}
	if st := f.node(id, "a"); !st.Fallback || string(st.Output) != `"attempts exhausted (2 of 2)"` || st.Attempts != 2 {
		t.Fatalf("node state %+v", st)
	}
}

// TestRateLimitAcrossWorkers: 5 calls a second across two workers; no one-second window
// sees more than 6.
func TestRateLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, "limited")
	var mu sync.Mutex
	var calls []time.Time
	wf := workflow.New("limited")
	wf.Node("a", "limited")
	wf.Nodes[0].Rate = &workflow.Rate{Key: "api", PerSecond: 5, Burst: 1}
	f.apply(wf)
	var workers []*Worker
	for range 2 {
		w, _, _ := f.worker(Config{}, func(w *Worker) {
			w.Handle("limited", func(context.Context, *Step) (any, error) {
				mu.Lock()
				calls = append(calls, time.Now())
				mu.Unlock()
				return nil, nil
			})
		})
		workers = append(workers, w)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		for _, w := range workers {
			if w.presenceCount("limited") != 2 {
				return false
			}
		}
		return true
	}, "the workers did not see each other")
	var ids []string
	for i := range 25 {
		ids = append(ids, f.start("limited", fmt.Sprintf(`{"i":%d}`, i)))
	}
	for _, id := range ids {
		if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s", id, end.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(calls, func(i, j int) bool { return calls[i].Before(calls[j]) })
	worst := 0
	for i := range calls {
		n := 0
		for j := i; j < len(calls) && calls[j].Sub(calls[i]) < time.Second; j++ {
			n++
		}
		worst = max(worst, n)
	}
	if len(calls) != 25 || worst > 6 {
		t.Fatalf("%d calls, busiest one-second window %d: want 25 and at most 6", len(calls), worst)
	}
}

// TestConcurrencyCapAcrossWorkers: a node's concurrency: 2, applied to its type's consumer
// (MaxAckPending), holds across two workers of concurrency 8: never more than two of its
// steps in flight at once.
func TestConcurrencyCapAcrossWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, "scarce")
	wf := workflow.New("capped")
	wf.Node("a", "scarce")
	wf.Nodes[0].Concurrency = 2
	f.apply(wf)
	if _, err := jfsetup.ApplyConcurrency(context.Background(), f.js, f.names, wf, true); err != nil {
		t.Fatal(err)
	}
	var inFlight, worst atomic.Int32
	for range 2 {
		f.worker(Config{Concurrency: 8}, func(w *Worker) {
			w.Handle("scarce", func(ctx context.Context, s *Step) (any, error) {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for {
					old := worst.Load()
					if n <= old || worst.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
				return nil, nil
			})
		})
	}
	var ids []string
	for i := range 12 {
		ids = append(ids, f.start("capped", fmt.Sprintf(`{"i":%d}`, i)))
	}
	for _, id := range ids {
		if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s", id, end.Status)
		}
	}
	if w := worst.Load(); w > 2 || w < 1 {
		t.Fatalf("%d steps of the capped type ran at once, want at most 2", w)
	}
}
