package metrics

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/breaker"
)

// fakeActuator records what Health asked of the worker.
type fakeActuator struct {
	mu    sync.Mutex
	calls []string
}

func (a *fakeActuator) SetTypeConcurrency(typ string, n int) {
	a.record(fmt.Sprintf("concurrency %s %d", typ, n))
}

func (a *fakeActuator) PauseType(typ string, until time.Time) {
	a.record(fmt.Sprintf("pause %s until +%s", typ, until.Sub(t0)))
}

func (a *fakeActuator) ResumeType(typ string) { a.record("resume " + typ) }

func (a *fakeActuator) record(s string) {
	a.mu.Lock()
	a.calls = append(a.calls, s)
	a.mu.Unlock()
}

// take returns the calls since the last take.
func (a *fakeActuator) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

// t0 is the fake clock's start.
var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestHealth(t *testing.T) (*Health, *fakeActuator, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{now: t0}
	act := &fakeActuator{}
	reg := prometheus.NewRegistry()
	h, err := NewHealth(reg, act, HealthConfig{Clock: c.Now, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	return h, act, c, reg
}

// feed observes n outcomes of typ, failed of them failed, each taking took.
func feed(h *Health, scope Scope, name string, n, failed int, took time.Duration) {
	for i := range n {
		h.Observe(scope, name, i < failed, took)
	}
}

func TestHealthVerdicts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		n, fail int
		took    time.Duration
		want    Status
		actions []string
	}{
		{"all good", 50, 0, 20 * time.Millisecond, Healthy, nil},
		{"too few samples to judge", 9, 9, 20 * time.Millisecond, Healthy, nil},
		{"just under degraded", 100, 19, 20 * time.Millisecond, Healthy, nil},
		{"error rate degraded", 100, 20, 20 * time.Millisecond, Degraded, []string{"concurrency t 4"}},
		{"slow p95 degraded", 20, 0, 12 * time.Second, Degraded, []string{"concurrency t 4"}},
		{"error rate unhealthy", 10, 5, 20 * time.Millisecond, Unhealthy, []string{"pause t until +30s"}},
		{"very slow unhealthy", 20, 0, 2 * time.Minute, Unhealthy, []string{"pause t until +30s"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h, act, _, _ := newTestHealth(t)
			feed(h, ScopeType, "t", c.n, c.fail, c.took)
			h.Evaluate()
			if got := h.Status(ScopeType, "t"); got != c.want {
				t.Errorf("status %s, want %s", got, c.want)
			}
			if got := act.take(); !slices.Equal(got, c.actions) {
				t.Errorf("actions %q, want %q", got, c.actions)
			}
		})
	}
}

// TestHealthLifecycle walks a node type through degraded, unhealthy (paused), probing,
// unhealthy again (a longer pause), and back to healthy, checking each action and the
// exported status.
func TestHealthLifecycle(t *testing.T) {
	t.Parallel()
	h, act, clk, reg := newTestHealth(t)
	step := func(what string, wantStatus Status, wantActions ...string) {
		t.Helper()
		h.Evaluate()
		if got := h.Status(ScopeType, "http"); got != wantStatus {
			t.Fatalf("%s: status %s, want %s", what, got, wantStatus)
		}
		if got := act.take(); !slices.Equal(got, wantActions) {
			t.Fatalf("%s: actions %q, want %q", what, got, wantActions)
		}
		if got := gauge(t, reg, "type", "http"); got != float64(wantStatus) {
			t.Fatalf("%s: jetflow_health_status = %v, want %v", what, got, float64(wantStatus))
		}
	}

	feed(h, ScopeType, "http", 20, 5, time.Second) // 25 % errors
	step("degraded", Degraded, "concurrency http 4")
	step("still degraded: no second action", Degraded)

	clk.Add(10 * time.Second)
	feed(h, ScopeType, "http", 20, 20, time.Second) // now 25 of 40 failed
	step("unhealthy", Unhealthy, "pause http until +40s")

	clk.Add(20 * time.Second)
	step("still paused", Unhealthy)

	clk.Add(10 * time.Second) // the pause is over
	step("probing", Degraded, "concurrency http 4", "resume http")
	feed(h, ScopeType, "http", 5, 5, time.Second)
	step("too few fresh samples: keep probing", Degraded)
	feed(h, ScopeType, "http", 5, 5, time.Second)
	step("unhealthy again: a longer pause", Unhealthy, "pause http until +1m40s")

	clk.Add(time.Minute)
	step("probing again", Degraded, "concurrency http 4", "resume http")
	feed(h, ScopeType, "http", 30, 0, 50*time.Millisecond)
	step("recovered", Healthy, "concurrency http 8")

	// Healthy resets the pause length.
	clk.Add(10 * time.Second)
	feed(h, ScopeType, "http", 40, 40, time.Second) // 40 of 70 failed
	step("unhealthy once more", Unhealthy, fmt.Sprintf("pause http until +%s", clk.Now().Sub(t0)+30*time.Second))
}

// TestHealthWindowSlides checks that old outcomes stop counting once the window passes.
func TestHealthWindowSlides(t *testing.T) {
	t.Parallel()
	h, act, clk, _ := newTestHealth(t)
	feed(h, ScopeType, "exec", 20, 6, time.Second)
	h.Evaluate()
	if got := h.Status(ScopeType, "exec"); got != Degraded {
		t.Fatalf("status %s, want degraded", got)
	}
	clk.Add(DefaultHealthWindow + DefaultHealthBucket)
	h.Evaluate()
	if got := h.Status(ScopeType, "exec"); got != Healthy {
		t.Fatalf("status %s after the window passed, want healthy", got)
	}
	if got := act.take(); !slices.Equal(got, []string{"concurrency exec 4", "concurrency exec 8"}) {
		t.Fatalf("actions %q", got)
	}
}

// TestHealthBreakerScope checks that breaker keys follow their breaker's state and their own
// outcomes, and that nothing is asked of the worker for them.
func TestHealthBreakerScope(t *testing.T) {
	t.Parallel()
	h, act, _, reg := newTestHealth(t)
	key := "api.example.com"
	check := func(want Status) {
		t.Helper()
		h.Evaluate()
		if got := h.Status(ScopeBreaker, key); got != want {
			t.Fatalf("status %s, want %s", got, want)
		}
		if got := gauge(t, reg, "breaker", key); got != float64(want) {
			t.Fatalf("gauge %v, want %v", got, float64(want))
		}
	}
	h.BreakerState(key, breaker.Open)
	check(Unhealthy)
	h.BreakerState(key, breaker.HalfOpen)
	check(Degraded)
	h.BreakerState(key, breaker.Closed)
	check(Healthy)
	feed(h, ScopeBreaker, key, 10, 3, 100*time.Millisecond)
	check(Degraded)
	if got := act.take(); len(got) != 0 {
		t.Fatalf("breaker keys must not act on the worker: %q", got)
	}
	snap := h.Snapshot()
	if len(snap) != 1 || snap[0].Scope != ScopeBreaker || snap[0].Stats.Samples != 10 || snap[0].Stats.Failed != 3 {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestHealthConfigValidation(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  HealthConfig
		want string
	}{
		{HealthConfig{Bucket: time.Hour}, "Bucket"},
		{HealthConfig{DegradedErrorRate: 1.5}, "DegradedErrorRate"},
		{HealthConfig{DegradedErrorRate: .6, UnhealthyErrorRate: .5}, "UnhealthyErrorRate"},
		{HealthConfig{DegradedP95: time.Hour}, "UnhealthyP95"},
		{HealthConfig{PauseFor: time.Hour}, "MaxPause"},
	} {
		_, err := NewHealth(prometheus.NewRegistry(), nil, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %s", c.cfg, err, c.want)
		}
	}
}

func gauge(t *testing.T, g prometheus.Gatherer, scope, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "jetflow_health_status" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var s, n string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "scope":
					s = l.GetValue()
				case "name":
					n = l.GetValue()
				}
			}
			if s == scope && n == name {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func TestWindowQuantiles(t *testing.T) {
	t.Parallel()
	w := newWindow(time.Minute, time.Second)
	now := t0
	for i := 1; i <= 100; i++ {
		w.add(now, false, time.Duration(i)*time.Millisecond*10) // 10 ms … 1 s
	}
	s := w.stats(now)
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{{"p50", s.P50, 500 * time.Millisecond}, {"p95", s.P95, 950 * time.Millisecond}, {"p99", s.P99, 990 * time.Millisecond}} {
		if c.got < c.want || float64(c.got) > 1.25*float64(c.want) {
			t.Errorf("%s = %s, want %s to within +25%%", c.name, c.got, c.want)
		}
	}
	if s.Samples != 100 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestWindowAddAllocatesNothing is not parallel: AllocsPerRun needs the process to itself.
func TestWindowAddAllocatesNothing(t *testing.T) {
	w := newWindow(time.Minute, time.Second)
	now := t0
	if allocs := testing.AllocsPerRun(100, func() { w.add(now, true, time.Second) }); allocs != 0 {
		t.Errorf("window.add allocates %v times", allocs)
	}
}

// A health view written to JSON (as /api/health serves it) reads back into a HealthView.
func TestHealthStatusRoundTrip(t *testing.T) {
	for _, st := range []Status{Healthy, Degraded, Unhealthy} {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back Status
		if err := json.Unmarshal(b, &back); err != nil || back != st {
			t.Errorf("%s → %s → %v (%v)", st, b, back, err)
		}
	}
	var s Status
	if err := json.Unmarshal([]byte(`"sick"`), &s); err == nil {
		t.Error(`"sick" was read as a status`)
	}
}
