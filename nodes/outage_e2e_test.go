package nodes_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// flakyAPI is a real HTTP dependency whose health the test switches; it records when each
// call arrived.
type flakyAPI struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	calls  []time.Time
}

func newFlakyAPI(t *testing.T) *flakyAPI {
	a := &flakyAPI{}
	a.status.Store(http.StatusOK)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.calls = append(a.calls, time.Now())
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(a.status.Load()))
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(a.Close)
	return a
}

// between counts the calls that arrived in [from, to).
func (a *flakyAPI) between(from, to time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.calls {
		if !c.Before(from) && c.Before(to) {
			n++
		}
	}
	return n
}

// protectedEnv is a NATS server set up for jetflow, the workflow def applied, and two
// workers with the built-in node types and default settings.
type protectedEnv struct {
	srv   *natstest.Server
	js    jetstream.JetStream
	names workflow.Names
	store *checkpoint.Store
	prod  *producer.Producer
}

func newProtectedEnv(t *testing.T, def string) *protectedEnv {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 30*time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse("def.yaml", []byte(def), workflow.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "w2"} {
		w, err := consumer.New(js, store, consumer.Config{Names: names, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		nodes.Register(w)
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done })
	}
	return &protectedEnv{srv: srv, js: js, names: names, store: store, prod: producer.New(js, store, producer.Config{Names: names})}
}

func (e *protectedEnv) start(t *testing.T, wf string, input any) string {
	t.Helper()
	b, _ := json.Marshal(input)
	id, err := e.prod.Start(context.Background(), wf, b, producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *protectedEnv) wait(t *testing.T, id string, within time.Duration) *checkpoint.End {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	end, err := e.store.WaitEnd(ctx, id)
	if err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	return end
}

// trip reads the shared trip of a breaker key, with when it was written.
func (e *protectedEnv) trip(key string) (*breaker.Trip, time.Time) {
	kv, err := e.js.KeyValue(context.Background(), e.names.BreakersBucket())
	if err != nil {
		return nil, time.Time{}
	}
	entry, err := kv.Get(context.Background(), breaker.BucketKey(key))
	if err != nil {
		return nil, time.Time{}
	}
	var t breaker.Trip
	if json.Unmarshal(entry.Value(), &t) != nil {
		return nil, time.Time{}
	}
	return &t, entry.Created()
}

// TestOutageOnDefaultSettings: an http node with no retry or breaker settings at all, two
// workers, the default ack wait, and a dependency that fails every call for 30 seconds.
// The first run meets the outage alone (its attempts spread over both workers: the
// breaker's failure count is shared, so it trips anyway, on the attempt that would have
// been the last, and that attempt is given back); five more arrive while the key is open.
// While open, nobody calls the dependency and no attempt is spent; after the outage every
// run completes and the DLQ is empty.
func TestOutageOnDefaultSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30-second outage: skipped with -short")
	}
	t.Parallel()
	api := newFlakyAPI(t)
	u, _ := url.Parse(api.URL)
	e := newProtectedEnv(t, `name: outage
nodes:
  - name: call
    type: http
    with: {method: GET, url: "${{ input.url }}"}
`)
	ctx := context.Background()
	input := map[string]string{"url": api.URL}
	start := func() string { return e.start(t, "outage", input) }
	wait := func(id string, within time.Duration) *checkpoint.End { return e.wait(t, id, within) }
	store, js, names := e.store, e.js, e.names

	// Healthy: a run completes.
	if end := wait(start(), 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("healthy run ended %s (%s)", end.Status, end.Reason)
	}

	// The outage.
	api.status.Store(http.StatusInternalServerError)
	outageEnds := time.Now().Add(30 * time.Second)
	time.AfterFunc(time.Until(outageEnds), func() { api.status.Store(http.StatusOK) })
	ids := []string{start()}
	var trip breaker.Trip
	var trippedAt time.Time
	natstest.Eventually(t, 40*time.Second, func() bool {
		tr, at := e.trip(u.Host)
		if tr == nil {
			return false
		}
		trip, trippedAt = *tr, at
		return true
	}, "the breaker of %s never opened", u.Host)
	for range 5 {
		ids = append(ids, start())
	}
	attempts := func() map[string]int {
		m := map[string]int{}
		for _, id := range ids {
			st, _, err := store.Node(ctx, id, "call")
			if err == nil && st != nil {
				m[id] = st.Attempts
			}
		}
		return m
	}
	// A call already under way when the key opened may still land in its first second.
	time.Sleep(time.Until(trippedAt.Add(time.Second)))
	before := attempts()
	if d := time.Until(trip.OpenUntil.Add(-500 * time.Millisecond)); d > 0 {
		time.Sleep(d)
		if n := api.between(trippedAt.Add(time.Second), trip.OpenUntil); n != 0 {
			t.Errorf("%d calls reached the dependency while its breaker was open", n)
		}
		after := attempts()
		for id, n := range after {
			if n != before[id] {
				t.Errorf("run %s: attempts went %d → %d while the breaker was open", id, before[id], n)
			}
		}
	}

	for _, id := range ids {
		end := wait(id, 90*time.Second)
		if end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s): the outage was not waited out", id, end.Status, end.Reason)
		}
	}
	if entries, err := dlq.List(ctx, js, names, dlq.Filter{}); err != nil || len(entries) != 0 {
		t.Fatalf("DLQ after the outage: %d entries (%v), want 0", len(entries), err)
	}
	t.Logf("tripped %s after the outage began; open until %s; %d calls in all",
		trippedAt.Sub(outageEnds.Add(-30*time.Second)).Round(time.Millisecond), trip.OpenUntil.Format(time.StampMilli), len(api.calls))
}

// TestRetryAfterHTTPDateIsClusterWide: an http node's 429 with Retry-After as an HTTP date
// closes the URL's host to both workers until that date; then the runs complete.
func TestRetryAfterHTTPDateIsClusterWide(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls []time.Time
		until time.Time // 429 before it, with Retry-After: until as an HTTP date
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		calls = append(calls, now)
		if until.IsZero() {
			// HTTP dates have whole seconds: 3 to 4 seconds from now.
			until = now.Add(4 * time.Second).Truncate(time.Second)
		}
		if now.Before(until) {
			w.Header().Set("Retry-After", until.UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	defer api.Close()
	u, _ := url.Parse(api.URL)
	e := newProtectedEnv(t, `name: polite
nodes:
  - name: call
    type: http
    with: {method: GET, url: "${{ input.url }}"}
`)
	first := e.start(t, "polite", map[string]any{"url": api.URL, "i": 0})
	var cool *breaker.Trip
	natstest.Eventually(t, 20*time.Second, func() bool { cool, _ = e.trip(u.Host); return cool != nil }, "no cool-down was set for %s", u.Host)
	mu.Lock()
	want := until
	mu.Unlock()
	if cool.Reason != "retry-after" || cool.OpenUntil.Sub(want).Abs() > time.Second {
		t.Fatalf("trip %+v, want a retry-after cool-down until %s", cool, want.Format(time.StampMilli))
	}
	ids := []string{first}
	for i := 1; i <= 4; i++ {
		ids = append(ids, e.start(t, "polite", map[string]any{"url": api.URL, "i": i}))
	}
	for _, id := range ids {
		if end := e.wait(t, id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	early := 0
	for _, c := range calls[1:] {
		if c.Before(cool.OpenUntil) {
			early++
		}
	}
	if early != 0 {
		t.Fatalf("%d calls reached %s before the Retry-After date %s", early, u.Host, cool.OpenUntil.Format(time.StampMilli))
	}
}

// srvConn opens a connection of the test's own to the env's server.
func (e *protectedEnv) srvConn(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return e.srv.Connect(t)
}
