package nodes_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
)

func sleepStep(with map[string]any, notBefore time.Time) *consumer.Step {
	s := newStep(with, `{"input":null}`)
	s.Type = "sleep"
	s.NotBefore = notBefore
	return s
}

func requirePark(t *testing.T, out any, err error) *consumer.ParkError {
	t.Helper()
	var pk *consumer.ParkError
	if !errors.As(err, &pk) {
		t.Fatalf("err = %v (%T), want a *consumer.ParkError", err, err)
	}
	if isPermanent(err) {
		t.Errorf("a park must not be permanent: %v", err)
	}
	if out != nil {
		t.Errorf("output = %v, want nil while parked", out)
	}
	return pk
}

// A first run parks the step for the whole duration.
func TestSleepFirstRunParks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		duration string
		want     time.Duration
	}{
		{"1ms", time.Millisecond},
		{"30s", 30 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"72h", 72 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.duration, func(t *testing.T) {
			t.Parallel()
			before := time.Now()
			out, err := nodes.Sleep(t.Context(), sleepStep(map[string]any{"duration": tt.duration}, time.Time{}))
			after := time.Now()
			pk := requirePark(t, out, err)
			if !pk.Until.After(before) {
				t.Errorf("Until %v is not after the call started (%v)", pk.Until, before)
			}
			if lo, hi := before.Add(tt.want), after.Add(tt.want); pk.Until.Before(lo) || pk.Until.After(hi) {
				t.Errorf("Until = %v, want now+%v, between %v and %v", pk.Until, tt.want, lo, hi)
			}
			if limit := before.Add(tt.want + time.Second); pk.Until.After(limit) {
				t.Errorf("Until = %v, later than now+duration+1s (%v)", pk.Until, limit)
			}
		})
	}
}

// A step woken before its time parks again until the same instant.
func TestSleepEarlyWakeParksUntilNotBefore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		ahead time.Duration
	}{
		{"an hour early", time.Hour},
		{"a minute early", time.Minute},
		{"far future", 400 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			notBefore := time.Now().Add(tt.ahead).Truncate(time.Second)
			out, err := nodes.Sleep(t.Context(), sleepStep(map[string]any{"duration": "30s"}, notBefore))
			pk := requirePark(t, out, err)
			if !pk.Until.Equal(notBefore) {
				t.Errorf("Until = %v, want NotBefore %v", pk.Until, notBefore)
			}
		})
	}
}

// A step woken at or after its time is done.
func TestSleepWokenAfterNotBeforeFinishes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		duration  string
		notBefore time.Duration // relative to now
		want      string
	}{
		{"just passed", "30s", -time.Millisecond, "30s"},
		{"long passed", "1h30m", -48 * time.Hour, "1h30m0s"},
		{"sub-second", "250ms", -time.Second, "250ms"},
		// A schedule that fires a hair early must not park the step again.
		{"a few ms early", "30s", 10 * time.Millisecond, "30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := nodes.Sleep(t.Context(), sleepStep(map[string]any{"duration": tt.duration}, time.Now().Add(tt.notBefore)))
			if err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			m, ok := out.(map[string]any)
			if !ok {
				t.Fatalf("output is %T (%v), want map[string]any", out, out)
			}
			if want := map[string]any{"slept": tt.want}; !maps.Equal(m, want) {
				t.Errorf("output = %v, want %v", m, want)
			}
		})
	}
}

func TestSleepBadDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		with map[string]any
	}{
		{"nil with", nil},
		{"missing", map[string]any{}},
		{"null", map[string]any{"duration": nil}},
		{"empty", map[string]any{"duration": ""}},
		{"garbage", map[string]any{"duration": "soon"}},
		{"no unit", map[string]any{"duration": "30"}},
		{"zero", map[string]any{"duration": "0s"}},
		{"negative", map[string]any{"duration": "-5s"}},
		{"a number from JSON", map[string]any{"duration": float64(30)}},
		{"a number from YAML", map[string]any{"duration": uint64(30)}},
	}
	for _, tt := range tests {
		for _, nb := range []struct {
			name string
			at   time.Time
		}{{"first run", time.Time{}}, {"woken", time.Now().Add(-time.Hour)}} {
			t.Run(tt.name+"/"+nb.name, func(t *testing.T) {
				t.Parallel()
				out, err := nodes.Sleep(t.Context(), sleepStep(tt.with, nb.at))
				requirePermanent(t, err, "with.duration")
				var pk *consumer.ParkError
				if errors.As(err, &pk) {
					t.Errorf("a bad duration must not park: %v", err)
				}
				if out != nil {
					t.Errorf("output = %v, want nil on error", out)
				}
			})
		}
	}
}

func TestSleepIgnoresCancelledContext(t *testing.T) {
	t.Parallel()
	// Sleep never blocks, so a cancelled context changes nothing: it still parks.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out, err := nodes.Sleep(ctx, sleepStep(map[string]any{"duration": "5m"}, time.Time{}))
	requirePark(t, out, err)
}
