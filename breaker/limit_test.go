package breaker

import (
	"testing"
	"time"
)

// TestTokensReserveAndSettle: a call reserves its estimate from the token limit; the reply's
// usage gives back what it did not use, or takes what it used beyond, and the next caller's
// wait follows.
func TestTokensReserveAndSettle(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	workers := 1
	l := NewLimits(func(string) int { return workers })
	l.now = func() time.Time { return now }
	// 600 tokens a minute: 10 a second, a minute's worth (600) at once.
	d, first := l.ReserveTokens("k", "llm", 600, 500)
	if d != 0 {
		t.Fatalf("the first 500 tokens waited %s", d)
	}
	if d, _ := l.ReserveTokens("k", "llm", 600, 200); d != 10*time.Second {
		t.Fatalf("200 more wait %s, want 10s (100 tokens short at 10 a second)", d)
	}
	// The first call used 100 tokens, not 500: 400 come back, the debt of 100 is paid.
	first.Settle(100)
	if d, _ := l.ReserveTokens("k", "llm", 600, 250); d != 0 {
		t.Fatalf("after the settle, 250 tokens waited %s; 300 were free", d)
	}
	// Taking more than reserved puts the limit in debt.
	_, second := l.ReserveTokens("k", "llm", 600, 50)
	second.Settle(150)
	if d, _ := l.ReserveTokens("k", "llm", 600, 10); d != 11*time.Second {
		t.Fatalf("after an overrun, 10 tokens wait %s, want 11s", d)
	}
	// A cancelled reservation gives everything back (two minutes on, the limit is full).
	now = now.Add(2 * time.Minute)
	_, c := l.ReserveTokens("k", "llm", 600, 600)
	c.Cancel()
	if d, _ := l.ReserveTokens("k", "llm", 600, 600); d != 0 {
		t.Fatalf("after a cancel, a minute's tokens waited %s", d)
	}
	// Two workers: each has 300 a minute.
	workers = 2
	now = now.Add(time.Minute)
	if d, _ := l.ReserveTokens("k", "llm", 600, 300); d != 0 {
		t.Fatalf("a worker's share waited %s", d)
	}
	if d, _ := l.ReserveTokens("k", "llm", 600, 50); d != 10*time.Second {
		t.Fatalf("beyond the share, 50 tokens wait %s, want 10s at 5 a second", d)
	}
}
