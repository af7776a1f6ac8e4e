package metrics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/breaker"
)

// Scope says what a health entry is about.
type Scope string

// Scopes of health entries.
const (
	// ScopeType is a node type: its steps' outcomes in this worker.
	ScopeType Scope = "type"
	// ScopeBreaker is a breaker key: its state, and the calls reported by Metrics.BreakerCall.
	ScopeBreaker Scope = "breaker"
)

// Status is how healthy a node type or a breaker key is.
type Status int

// Statuses, from best to worst (the jetflow_health_status values).
const (
	Healthy Status = iota
	Degraded
	Unhealthy
)

// String returns "healthy", "degraded" or "unhealthy".
func (s Status) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Degraded:
		return "degraded"
	}
	return "unhealthy"
}

// MarshalText writes the status as its name.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status written by MarshalText, so clients of /api/health can decode
// it into a HealthView.
func (s *Status) UnmarshalText(b []byte) error {
	switch string(b) {
	case "healthy":
		*s = Healthy
	case "degraded":
		*s = Degraded
	case "unhealthy":
		*s = Unhealthy
	default:
		return fmt.Errorf("health status %q: want healthy, degraded or unhealthy", b)
	}
	return nil
}

// Defaults of HealthConfig.
const (
	DefaultHealthWindow       = 5 * time.Minute
	DefaultHealthBucket       = 10 * time.Second
	DefaultMinSamples         = 10
	DefaultDegradedErrorRate  = 0.20
	DefaultUnhealthyErrorRate = 0.50
	DefaultDegradedP95        = 10 * time.Second
	DefaultUnhealthyP95       = time.Minute
	DefaultPauseFor           = 30 * time.Second
	DefaultMaxPause           = 5 * time.Minute
	DefaultTypeConcurrency    = 16
)

// HealthConfig tunes Health. Zero fields take the defaults.
//
// Every Bucket, each node type and breaker key is judged over the last Window, and only when
// it holds at least MinSamples outcomes (fewer: healthy, as nothing says otherwise):
// unhealthy when the error rate is at least UnhealthyErrorRate or p95 at least UnhealthyP95;
// else degraded when the error rate is at least DegradedErrorRate or p95 at least
// DegradedP95; else healthy. A breaker key is also at least degraded while half-open and
// unhealthy while open.
//
// What it does to a node type (through the Actuator): degraded → its concurrency is halved;
// unhealthy → it is paused for PauseFor, then resumed at half concurrency with a fresh window
// ("probing"); once MinSamples fresh outcomes are in it is judged again: unhealthy again
// pauses it for twice as long (up to MaxPause), healthy restores full concurrency. Breaker
// keys are only reported: their breakers act on them already.
type HealthConfig struct {
	// Window is how far back outcomes count (default 5 min).
	Window time.Duration
	// Bucket is the window's resolution and how often Run judges (default 10 s).
	Bucket time.Duration
	// MinSamples is the fewest outcomes in the window to judge on (default 10).
	MinSamples int
	// DegradedErrorRate is the error rate, 0..1, from which a scope is degraded (default 0.2).
	DegradedErrorRate float64
	// UnhealthyErrorRate is the error rate from which a scope is unhealthy (default 0.5).
	UnhealthyErrorRate float64
	// DegradedP95 is the p95 latency from which a scope is degraded (default 10 s).
	DegradedP95 time.Duration
	// UnhealthyP95 is the p95 latency from which a scope is unhealthy (default 1 min).
	UnhealthyP95 time.Duration
	// Concurrency is a node type's full concurrency, restored when it is healthy again
	// (default 16, the worker's default); degraded types run at half of it (at least 1).
	Concurrency int
	// PauseFor is how long an unhealthy node type is paused at first (default 30 s).
	PauseFor time.Duration
	// MaxPause caps the pause of a type that stays unhealthy (default 5 min).
	MaxPause time.Duration
	// Logger receives every status change (default: discard).
	Logger *slog.Logger
	// Clock returns the time (default time.Now).
	Clock func() time.Time
}

// WithDefaults returns c with zero fields filled in.
func (c HealthConfig) WithDefaults() HealthConfig {
	c.Window = cmp.Or(c.Window, DefaultHealthWindow)
	c.Bucket = cmp.Or(c.Bucket, DefaultHealthBucket)
	c.MinSamples = cmp.Or(c.MinSamples, DefaultMinSamples)
	c.DegradedErrorRate = cmp.Or(c.DegradedErrorRate, DefaultDegradedErrorRate)
	c.UnhealthyErrorRate = cmp.Or(c.UnhealthyErrorRate, DefaultUnhealthyErrorRate)
	c.DegradedP95 = cmp.Or(c.DegradedP95, DefaultDegradedP95)
	c.UnhealthyP95 = cmp.Or(c.UnhealthyP95, DefaultUnhealthyP95)
	c.Concurrency = cmp.Or(c.Concurrency, DefaultTypeConcurrency)
	c.PauseFor = cmp.Or(c.PauseFor, DefaultPauseFor)
	c.MaxPause = cmp.Or(c.MaxPause, DefaultMaxPause)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

func (c HealthConfig) validate() error {
	switch {
	case c.Window < 0 || c.Bucket < 0 || c.Bucket > c.Window:
		return errors.New("metrics: HealthConfig.Bucket must be positive and at most Window")
	case c.MinSamples < 0:
		return errors.New("metrics: HealthConfig.MinSamples must be positive")
	case c.DegradedErrorRate < 0 || c.DegradedErrorRate > 1:
		return errors.New("metrics: HealthConfig.DegradedErrorRate must be within 0..1")
	case c.UnhealthyErrorRate < c.DegradedErrorRate || c.UnhealthyErrorRate > 1:
		return errors.New("metrics: HealthConfig.UnhealthyErrorRate must be within DegradedErrorRate..1")
	case c.DegradedP95 < 0 || c.UnhealthyP95 < c.DegradedP95:
		return errors.New("metrics: HealthConfig.UnhealthyP95 must be at least DegradedP95")
	case c.Concurrency < 0:
		return errors.New("metrics: HealthConfig.Concurrency must be positive")
	case c.PauseFor < 0 || c.MaxPause < c.PauseFor:
		return errors.New("metrics: HealthConfig.MaxPause must be at least PauseFor")
	}
	return nil
}

// Actuator is what Health changes in a worker when a node type's health changes. The worker
// implements it; calls come from Health.Evaluate, never with a lock of Health held.
type Actuator interface {
	// SetTypeConcurrency makes the worker run at most n steps of typ at once.
	SetTypeConcurrency(typ string, n int)
	// PauseType stops fetching steps of typ until until (or ResumeType).
	PauseType(typ string, until time.Time)
	// ResumeType fetches steps of typ again.
	ResumeType(typ string)
}

// Health watches the outcomes of node types and breaker keys, judges each healthy, degraded
// or unhealthy, logs and exports (jetflow_health_status{scope,name}) every change, and acts
// on node types through an Actuator. Feed it through Metrics (Options.Health) and call Run.
type Health struct {
	cfg    HealthConfig
	act    Actuator
	log    *slog.Logger
	now    func() time.Time
	status *prometheus.GaugeVec

	mu      sync.Mutex
	entries map[entryKey]*entry
}

type entryKey struct {
	scope Scope
	name  string
}

type entry struct {
	win     *window
	status  Status
	since   time.Time
	breaker breaker.State
	// A type paused until pausedUntil; then probing until probeUntil.
	pausedUntil time.Time
	probeUntil  time.Time
	pauseFor    time.Duration
	last        Stats
}

// NewHealth returns a health monitor exporting jetflow_health_status through reg and acting
// through act (nil: it only reports).
func NewHealth(reg prometheus.Registerer, act Actuator, cfg HealthConfig) (*Health, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &Health{cfg: cfg, act: act, log: cfg.Logger, now: cfg.Clock, entries: map[entryKey]*entry{},
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetflow_health_status", Help: "Health of a node type or breaker key: 0 healthy, 1 degraded, 2 unhealthy.",
		}, []string{"scope", "name"})}
	if err := reg.Register(h.status); err != nil {
		return nil, err
	}
	return h, nil
}

// entry returns the entry of scope/name, creating it; h.mu is held.
func (h *Health) entry(scope Scope, name string, now time.Time) *entry {
	k := entryKey{scope, name}
	e := h.entries[k]
	if e == nil {
		e = &entry{win: newWindow(h.cfg.Window, h.cfg.Bucket), since: now, pauseFor: h.cfg.PauseFor}
		h.entries[k] = e
		h.status.WithLabelValues(string(scope), name).Set(float64(Healthy))
	}
	return e
}

// Observe records one outcome of a node type (ScopeType) or of a call behind a breaker key
// (ScopeBreaker). It allocates nothing once the entry exists.
func (h *Health) Observe(scope Scope, name string, failed bool, took time.Duration) {
	now := h.now()
	h.mu.Lock()
	h.entry(scope, name, now).win.add(now, failed, took)
	h.mu.Unlock()
}

// BreakerState records a breaker key's state.
func (h *Health) BreakerState(key string, st breaker.State) {
	h.mu.Lock()
	h.entry(ScopeBreaker, key, h.now()).breaker = st
	h.mu.Unlock()
}

// Run judges every entry each Bucket until ctx ends.
func (h *Health) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Bucket)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			h.Evaluate()
		}
	}
}

// verdict judges stats by the thresholds.
func (h *Health) verdict(s Stats) Status {
	if s.Samples < h.cfg.MinSamples {
		return Healthy
	}
	switch {
	case s.ErrorRate >= h.cfg.UnhealthyErrorRate || s.P95 >= h.cfg.UnhealthyP95:
		return Unhealthy
	case s.ErrorRate >= h.cfg.DegradedErrorRate || s.P95 >= h.cfg.DegradedP95:
		return Degraded
	}
	return Healthy
}

// Evaluate judges every entry now, logs and exports each change, and acts on node types.
// Run calls it every Bucket; call it yourself if you do not Run.
func (h *Health) Evaluate() {
	now := h.now()
	var actions []func()
	h.mu.Lock()
	for k, e := range h.entries {
		e.last = e.win.stats(now)
		if k.scope == ScopeBreaker {
			v := h.verdict(e.last)
			switch e.breaker {
			case breaker.Open:
				v = Unhealthy
			case breaker.HalfOpen:
				v = max(v, Degraded)
			}
			h.set(k, e, v, now, "")
			continue
		}
		actions = append(actions, h.judgeType(k, e, now)...)
	}
	h.mu.Unlock()
	for _, a := range actions {
		a()
	}
}

// judgeType decides a node type's status and returns what to do to the worker; h.mu is held.
func (h *Health) judgeType(k entryKey, e *entry, now time.Time) []func() {
	typ := k.name
	half := max(h.cfg.Concurrency/2, 1)
	switch {
	case e.status == Unhealthy && now.Before(e.pausedUntil):
		return nil // paused: wait
	case e.status == Unhealthy:
		// The pause is over: probe at half concurrency on fresh outcomes.
		e.win.reset()
		e.last = Stats{}
		e.probeUntil = now.Add(h.cfg.Window)
		h.set(k, e, Degraded, now, "pause over: probe at half concurrency")
		return h.do(func(a Actuator) { a.SetTypeConcurrency(typ, half); a.ResumeType(typ) })
	case now.Before(e.probeUntil) && e.last.Samples < h.cfg.MinSamples:
		return nil // probing: too few fresh outcomes to judge yet
	}
	probing := !e.probeUntil.IsZero()
	e.probeUntil = time.Time{}
	v := h.verdict(e.last)
	if v == e.status {
		return nil
	}
	switch v {
	case Unhealthy:
		if probing {
			e.pauseFor = min(2*e.pauseFor, h.cfg.MaxPause)
		}
		until := now.Add(e.pauseFor)
		e.pausedUntil = until
		h.set(k, e, Unhealthy, now, "pause until "+until.UTC().Format(time.RFC3339))
		return h.do(func(a Actuator) { a.PauseType(typ, until) })
	case Degraded:
		h.set(k, e, Degraded, now, "halve concurrency")
		return h.do(func(a Actuator) { a.SetTypeConcurrency(typ, half) })
	}
	e.pauseFor = h.cfg.PauseFor
	h.set(k, e, Healthy, now, "restore full concurrency")
	full := h.cfg.Concurrency
	return h.do(func(a Actuator) { a.SetTypeConcurrency(typ, full) })
}

func (h *Health) do(f func(Actuator)) []func() {
	if h.act == nil {
		return nil
	}
	act := h.act
	return []func(){func() { f(act) }}
}

// set moves an entry to status v, logging and exporting a change; h.mu is held.
func (h *Health) set(k entryKey, e *entry, v Status, now time.Time, action string) {
	if v == e.status {
		return
	}
	level := slog.LevelWarn
	if v < e.status {
		level = slog.LevelInfo
	}
	attrs := []any{"scope", string(k.scope), "name", k.name, "from", e.status.String(), "to", v.String(),
		"samples", e.last.Samples, "error_rate", e.last.ErrorRate, "p95", e.last.P95}
	if action != "" {
		attrs = append(attrs, "action", action)
	}
	h.log.Log(context.Background(), level, "health changed", attrs...)
	e.status, e.since = v, now
	h.status.WithLabelValues(string(k.scope), k.name).Set(float64(v))
}

// HealthView is one entry of Health.Snapshot.
type HealthView struct {
	// Scope and Name say what it is about: a node type or a breaker key.
	Scope Scope  `json:"scope"`
	Name  string `json:"name"`
	// Status is the entry's status, held since Since.
	Status Status    `json:"status"`
	Since  time.Time `json:"since"`
	// Stats are the window's now (Status is as of the last Evaluate).
	Stats Stats `json:"stats"`
	// PausedUntil is when a paused node type is probed again.
	PausedUntil *time.Time `json:"paused_until,omitempty"`
}

// Snapshot returns every entry's status, node types first, then by name.
func (h *Health) Snapshot() []HealthView {
	now := h.now()
	h.mu.Lock()
	out := make([]HealthView, 0, len(h.entries))
	for k, e := range h.entries {
		v := HealthView{Scope: k.scope, Name: k.name, Status: e.status, Since: e.since, Stats: e.win.stats(now)}
		if e.status == Unhealthy && now.Before(e.pausedUntil) && k.scope == ScopeType {
			t := e.pausedUntil
			v.PausedUntil = &t
		}
		out = append(out, v)
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b HealthView) int {
		return cmp.Or(cmp.Compare(b.Scope, a.Scope), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Status returns the status of scope/name (Healthy when unknown).
func (h *Health) Status(scope Scope, name string) Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.entries[entryKey{scope, name}]; e != nil {
		return e.status
	}
	return Healthy
}
