package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	ctx := t.Context()
	kv := bucket(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var trips []string
	a := New(kv, "a", Options{Clock: clock, OnTrip: func(st Settings, _ time.Time) { mu.Lock(); trips = append(trips, st.Key); mu.Unlock() }})
	b := New(kv, "b", Options{Clock: clock})
	run(t, a, b)
	st := Settings{Key: "dep", ConsecutiveFailures: 2, OpenFor: time.Minute}
	for range 2 {
		tk, wait, err := a.Allow(ctx, st)
		if tk == nil || wait != 0 || err != nil {
			t.Fatalf("closed key refused: %v %v", wait, err)
		}
		tk.Done(ctx, errors.New("503"))
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(b.Open()) == 1 }, "b never saw a's trip")
	// a's own watch must deliver the trip too: until it does, a's local breaker (on the real
	// clock, not the test's) refuses for open_for and would not admit the probe below.
	natstest.Eventually(t, 5*time.Second, func() bool { return len(a.Open()) == 1 }, "a never saw its own trip")
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

// TestFailuresAddUpAcrossWorkers: consecutive failures count cluster-wide. Two Sets fail
// twice each against a threshold of four (neither trips on its own): the key opens for both.
// A success anywhere ends the streak.
func TestFailuresAddUpAcrossWorkers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv := bucket(t)
	a, b := New(kv, "a", Options{}), New(kv, "b", Options{})
	run(t, a, b)
	st := Settings{Key: "dep", ConsecutiveFailures: 4, OpenFor: time.Minute}
	call := func(s *Set, err error) {
		t.Helper()
		tk, wait, aerr := s.Allow(ctx, st)
		if tk == nil || wait != 0 || aerr != nil {
			t.Fatalf("closed key refused a call: wait %s, %v", wait, aerr)
		}
		tk.Done(ctx, err)
	}
	fail := errors.New("503")

	// Two failures each side, a success in the middle: the streak restarts.
	call(a, fail)
	call(b, fail)
	natstest.Eventually(t, 5*time.Second, func() bool { a.mu.RLock(); defer a.mu.RUnlock(); return a.counts["dep"] == 2 },
		"a never saw the shared count reach 2")
	call(a, nil)
	natstest.Eventually(t, 5*time.Second, func() bool { b.mu.RLock(); defer b.mu.RUnlock(); return b.counts["dep"] == 0 },
		"a success did not end the streak for b")
	call(a, fail)
	call(b, fail)
	call(a, fail)
	if len(a.Open()) != 0 || len(b.Open()) != 0 {
		t.Fatal("three failures in a row tripped a threshold of four")
	}
	call(b, fail)
	natstest.Eventually(t, 5*time.Second, func() bool { return len(a.Open()) == 1 && len(b.Open()) == 1 },
		"four failures in a row across two workers did not open the key for both")
	if _, open := a.OpenUntil(st); !open {
		t.Fatal("OpenUntil says closed while the key is tripped")
	}
	// Failures of calls under way when the key opened neither count nor extend the trip.
	until := b.Open()[0].OpenUntil
	b.countFailure(ctx, "dep", st.withDefaults())
	if e, err := kv.Get(ctx, countPrefix+"dep"); err == nil {
		t.Fatalf("a failure while open was counted: %s", e.Value())
	}
	if got := b.Open()[0].OpenUntil; !got.Equal(until) {
		t.Fatalf("a failure while open moved open_until %s → %s", until, got)
	}
}

// TestCoolDownOnlyKeys: a key with no breaker of its own gets no ticket and no KV traffic
// until a cool-down trips it; then it waits like any key, and probes after it.
func TestCoolDownOnlyKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv := bucket(t)
	s := New(kv, "a", Options{})
	run(t, s)
	st := Settings{Key: "wf.node", CoolDownOnly: true}
	for range 10 {
		tk, wait, err := s.Allow(ctx, st)
		if tk != nil || wait != 0 || err != nil {
			t.Fatalf("a cool-down-only key without a trip: ticket %v, wait %s, %v", tk, wait, err)
		}
		tk.Done(ctx, errors.New("500")) // nil ticket: nothing counted
	}
	if _, err := kv.Get(ctx, countPrefix+"wf.node"); err == nil {
		t.Fatal("failures of a cool-down-only key were counted")
	}
	s.CoolDown(ctx, st, 200*time.Millisecond)
	if !s.Tripped() {
		t.Fatal("Tripped is false after a cool-down")
	}
	if tk, wait, _ := s.Allow(ctx, st); tk != nil || wait <= 0 {
		t.Fatalf("a call was let through during the cool-down (wait %s)", wait)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		tk, _, _ := s.Allow(ctx, st)
		if tk == nil {
			return false
		}
		if !tk.Probe() {
			t.Fatal("the first call after a cool-down is not a probe")
		}
		tk.Done(ctx, nil)
		return true
	}, "no probe after the cool-down")
	natstest.Eventually(t, 5*time.Second, func() bool { return !s.Tripped() }, "a successful probe did not close the key")
}

// bucket starts a server set up for jetflow and returns its breakers bucket.
func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	kv, err := js.KeyValue(t.Context(), names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// run runs each Set until the test ends, once it has read the bucket.
func run(t *testing.T, sets ...*Set) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range sets {
		wg.Go(func() { _ = s.Run(ctx) })
		<-s.Ready()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestIdleBreakersAreEvicted: a worker calling many distinct keys (an http node whose URL
// host comes from a template) keeps a breaker per key only while the key is in use. Once
// keys have gone idle (closed, no failures, no call for ten minutes) the Set forgets them;
// a key with a failure streak or a call in flight is kept.
func TestIdleBreakersAreEvicted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := New(bucket(t), "a", Options{Clock: clock})
	run(t, s)
	call := func(key string, err error) {
		t.Helper()
		tk, wait, aerr := s.Allow(ctx, Settings{Key: key})
		if tk == nil || wait != 0 || aerr != nil {
			t.Fatalf("closed key %s refused a call: wait %s, %v", key, wait, aerr)
		}
		tk.Done(ctx, err)
	}
	const keys = 200
	for i := range keys {
		call(fmt.Sprintf("host-%d.example.com", i), nil)
	}
	call("failing.example.com", errors.New("503"))
	busy, _, err := s.Allow(ctx, Settings{Key: "busy.example.com"})
	if busy == nil || err != nil {
		t.Fatalf("busy key refused: %v", err)
	}
	if n := s.LocalBreakers(); n != keys+2 {
		t.Fatalf("%d breakers after %d keys were called, want %d", n, keys+2, keys+2)
	}
	mu.Lock()
	now = now.Add(11 * time.Minute)
	mu.Unlock()
	call("new.example.com", nil) // a new key: the Set looks for idle ones
	if n := s.LocalBreakers(); n > 3 {
		t.Fatalf("the Set holds %d breakers after %d keys went idle; want 3 (the failing key, the busy one, the new one)", n, keys)
	}
	s.mu.RLock()
	_, failing := s.local["failing.example.com"]
	_, inUse := s.local["busy.example.com"]
	s.mu.RUnlock()
	if !failing || !inUse {
		t.Fatalf("evicted a key still needed: failing kept %v, busy kept %v", failing, inUse)
	}
	busy.Done(ctx, nil)
	// The evicted keys work as before: a fresh breaker, closed.
	call("host-7.example.com", nil)
}

// TestClosedKeysLeaveNoMarkers: a failure streak that ends, or a trip that closes, removes
// its key from the breakers bucket with a marker that expires; many keys coming and going
// (templated hosts) do not leave one marker each in the stream for ever.
func TestClosedKeysLeaveNoMarkers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", time.Second)
	_, js := srv.Connect(t)
	stream, err := js.Stream(ctx, "KV_"+names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	// A short marker TTL, so the test need not wait the hour setup gives.
	sc := stream.CachedInfo().Config
	sc.AllowMsgTTL, sc.SubjectDeleteMarkerTTL = true, time.Second
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	s := New(kv, "a", Options{})
	run(t, s)
	call := func(st Settings, err error) {
		t.Helper()
		tk, wait, aerr := s.Allow(ctx, st)
		if tk == nil || wait != 0 || aerr != nil {
			t.Fatalf("key %s refused a call: wait %s, %v", st.Key, wait, aerr)
		}
		tk.Done(ctx, err)
	}
	const keys = 30
	for i := range keys {
		// One failure writes the key's shared count; the success after it removes it.
		st := Settings{Key: fmt.Sprintf("host-%d.example.com", i)}
		call(st, errors.New("503"))
		natstest.Eventually(t, 5*time.Second, func() bool { s.mu.RLock(); defer s.mu.RUnlock(); return s.counts[BucketKey(st.Key)] == 1 },
			"the count of %s was not written", st.Key)
		call(st, nil)
	}
	// A cool-down that a successful probe closes removes the trip the same way.
	st := Settings{Key: "cooled.example.com"}
	s.CoolDown(ctx, st, 10*time.Millisecond)
	natstest.Eventually(t, 5*time.Second, func() bool {
		tk, _, _ := s.Allow(ctx, st)
		if tk == nil {
			return false
		}
		tk.Done(ctx, nil)
		return true
	}, "no probe after the cool-down")
	natstest.Eventually(t, 5*time.Second, func() bool { return !s.Tripped() }, "the probe did not close the key")
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the breakers stream still holds %d messages 20 s after %d keys came and went; want none", info.State.Msgs, keys+1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
