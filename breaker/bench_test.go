package breaker

import (
	"context"
	"testing"
)

// BenchmarkClosedPath is the breaker's cost on every step while the dependency is healthy:
// Allow and Done on a closed key. The Set has no KV bucket at all here (nil): the closed path
// must not need one.
func BenchmarkClosedPath(b *testing.B) {
	s := New(nil, "bench", Options{})
	ctx := context.Background()
	st := Settings{Key: "api.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		t, wait, err := s.Allow(ctx, st)
		if t == nil || wait != 0 || err != nil {
			b.Fatal("closed breaker refused a call")
		}
		t.Done(ctx, nil)
	}
}

// BenchmarkRateLimitFarAboveLoad is a rate limit's cost on every step when the limit is far
// above the load.
func BenchmarkRateLimitFarAboveLoad(b *testing.B) {
	l := NewLimits(func(string) int { return 2 })
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := l.Reserve("api", "call", 1e9, 1e6); d != 0 {
			b.Fatal("limit far above the load made a call wait")
		}
	}
}

// BenchmarkProtectedStep is both together: the added cost of protection per step.
func BenchmarkProtectedStep(b *testing.B) {
	s := New(nil, "bench", Options{})
	l := NewLimits(func(string) int { return 2 })
	ctx := context.Background()
	st := Settings{Key: "api.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := l.Reserve("api", "call", 1e9, 1e6); d != 0 {
			b.Fatal("waited")
		}
		t, _, _ := s.Allow(ctx, st)
		t.Done(ctx, nil)
	}
}
