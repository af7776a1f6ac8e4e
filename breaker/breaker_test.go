package breaker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBucketKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"api.example.com", "api.example.com"},
		{"api.example.com:8443", "api.example.com_8443"},
		{"type=summarize", "type=summarize"},
		{"wf.node", "wf.node"},
		{".leading", "leading"},
		{"a b/c*>", "a_b_c__"},
		{"", "_"},
		{"ключ", "________"},
	} {
		if got := BucketKey(tc.in); got != tc.want {
			t.Errorf("BucketKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLimitsShareBetweenWorkers(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	workers := 1
	l := NewLimits(func(string) int { return workers })
	l.now = func() time.Time { return now }
	// Alone: burst 4 goes at once, the fifth waits 1/4 s at 4 per second.
	for i := range 4 {
		if d, _ := l.Reserve("k", "t", 4, 4); d != 0 {
			t.Fatalf("call %d waited %s within the burst", i, d)
		}
	}
	if d, _ := l.Reserve("k", "t", 4, 4); d != 250*time.Millisecond {
		t.Fatalf("fifth call waits %s, want 250ms", d)
	}
	// Four workers: each gets 1 per second and a burst of 1.
	workers = 4
	now = now.Add(10 * time.Second)
	if d, _ := l.Reserve("k", "t", 4, 4); d != 0 {
		t.Fatalf("first call of a fresh second waited %s", d)
	}
	d, giveBack := l.Reserve("k", "t", 4, 4)
	if d != time.Second {
		t.Fatalf("second call waits %s, want 1s (a quarter of 4/s)", d)
	}
	giveBack()
	if d, _ := l.Reserve("k", "t", 4, 4); d != time.Second {
		t.Fatalf("after giving a call back the next waits %s, want 1s again", d)
	}
}

// TestTripIsSharedAndProbedOnce: a trip written by one Set is seen by another through the
// bucket; after open_until exactly one probe is admitted across both; its failure opens the
// key again, its success closes it everywhere.
func TestTripIsSharedAndProbedOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.KeyValue(ctx, names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var trips []string
	a := New(kv, "a", Options{Clock: clock, OnTrip: func(k string, _ time.Time) { mu.Lock(); trips = append(trips, k); mu.Unlock() }})
	b := New(kv, "b", Options{Clock: clock})
	var wg sync.WaitGroup
	for _, s := range []*Set{a, b} {
		wg.Go(func() { _ = s.Run(ctx) })
		<-s.Ready()
	}
	defer wg.Wait()
	defer cancel()
	st := Settings{Key: "dep", ConsecutiveFailures: 2, OpenFor: time.Minute}
	for range 2 {
		tk, wait, err := a.Allow(ctx, st)
		if tk == nil || wait != 0 || err != nil {
			t.Fatalf("closed key refused: %v %v", wait, err)
		}
		tk.Done(ctx, errors.New("503"))
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(b.Open()) == 1 }, "b never saw a's trip")
	if tk, wait, _ := b.Allow(ctx, st); tk != nil || wait <= 0 {
		t.Fatalf("b admitted a call while the key is open (wait %s)", wait)
	}
	mu.Lock()
	if len(trips) != 1 || trips[0] != "dep" {
		t.Fatalf("OnTrip calls %v, want one for dep", trips)
	}
	mu.Unlock()
	// Half-open: one probe across both sets.
	advance(time.Minute + time.Second)
	probe, _, err := a.Allow(ctx, st)
	if probe == nil || err != nil {
		t.Fatalf("no probe admitted after open_for: %v", err)
	}
	if other, wait, _ := b.Allow(ctx, st); other != nil || wait != ProbeWait {
		t.Fatal("a second probe was admitted while the first is out")
	}
	probe.Done(ctx, errors.New("still down"))
	natstest.Eventually(t, 5*time.Second, func() bool {
		o := b.Open()
		return len(o) == 1 && o[0].OpenUntil.After(clock())
	}, "a failed probe did not open the key again")
	advance(time.Minute + time.Second)
	probe, _, _ = b.Allow(ctx, st)
	if probe == nil {
		t.Fatal("no probe after the second open period")
	}
	probe.Done(ctx, nil)
	natstest.Eventually(t, 5*time.Second, func() bool { return len(a.Open()) == 0 && len(b.Open()) == 0 }, "a successful probe did not close the key everywhere")
	if tk, _, _ := a.Allow(ctx, st); tk == nil {
		t.Fatal("closed key refused after recovery")
	}
}
