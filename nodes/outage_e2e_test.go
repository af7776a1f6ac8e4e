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
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 30*time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse("outage.yaml", []byte(`name: outage
nodes:
  - name: call
    type: http
    with: {method: GET, url: "${{ input.url }}"}
`), workflow.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		w, err := consumer.New(js, store, consumer.Config{Names: names, ID: []string{"w1", "w2"}[i]})
		if err != nil {
			t.Fatal(err)
		}
		nodes.Register(w)
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done })
	}
	p := producer.New(js, store, producer.Config{Names: names})
	input, _ := json.Marshal(map[string]string{"url": api.URL})
	start := func() string {
		id, err := p.Start(ctx, "outage", input, producer.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	wait := func(id string, within time.Duration) *checkpoint.End {
		tctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		end, err := store.WaitEnd(tctx, id)
		if err != nil {
			t.Fatalf("run %s: %v", id, err)
		}
		return end
	}

	// Healthy: a run completes.
	if end := wait(start(), 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("healthy run ended %s (%s)", end.Status, end.Reason)
	}

	// The outage.
	api.status.Store(http.StatusInternalServerError)
	outageEnds := time.Now().Add(30 * time.Second)
	time.AfterFunc(time.Until(outageEnds), func() { api.status.Store(http.StatusOK) })
	ids := []string{start()}
	bkv, err := js.KeyValue(ctx, names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	var trip breaker.Trip
	var trippedAt time.Time
	natstest.Eventually(t, 40*time.Second, func() bool {
		e, err := bkv.Get(ctx, breaker.BucketKey(u.Host))
		if err != nil || json.Unmarshal(e.Value(), &trip) != nil {
			return false
		}
		trippedAt = e.Created()
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
