package breaker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/jetflow-dev/jetflow/internal/kvwatch"
)

// Defaults of Settings.
const (
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = 30 * time.Second
	DefaultHalfOpenRequests    = 1
	// ProbeLease is how long a claimed probe keeps its slot when its worker never reports.
	ProbeLease = time.Minute
	// ProbeWait is how long a step waits while other workers probe a half-open key.
	ProbeWait = time.Second
	// DefaultIdleAfter is how long a closed key with no failures and no call goes unused
	// before its worker forgets its breaker.
	DefaultIdleAfter = 10 * time.Minute
)

// Settings configures the breaker of one key. Zero fields take the defaults.
type Settings struct {
	// Key names the dependency.
	Key string
	// ConsecutiveFailures trips the breaker (default 5).
	ConsecutiveFailures uint32
	// FailureRatio with MinRequests trips the breaker on a share of failures (optional).
	FailureRatio float64
	// MinRequests goes with FailureRatio.
	MinRequests uint32
	// OpenFor is how long a trip lasts (default 30 s).
	OpenFor time.Duration
	// HalfOpenRequests is the cluster-wide probe count after a trip (default 1).
	HalfOpenRequests uint32
	// PauseType, when set, is the node type the key covers as a whole: the worker that wins
	// a trip of the key is told so (Options.OnTrip) and pauses that type's consumer.
	PauseType string
	// CoolDownOnly marks a key without a breaker of its own (a node with no breaker block):
	// only shared trips apply to it (a Retry-After cool-down and the probes after it); its
	// calls are neither counted nor tripped here.
	CoolDownOnly bool
}

func (s Settings) withDefaults() Settings {
	s.ConsecutiveFailures = cmp.Or(s.ConsecutiveFailures, DefaultConsecutiveFailures)
	s.OpenFor = cmp.Or(s.OpenFor, DefaultOpenFor)
	s.HalfOpenRequests = cmp.Or(s.HalfOpenRequests, DefaultHalfOpenRequests)
	return s
}

// Trip is the shared record of an open (or half-open) key in the breakers bucket.
type Trip struct {
	// Key is the breaker key as configured (the bucket key is a sanitised form).
	Key string `json:"key"`
	// OpenUntil: no call before it.
	OpenUntil time.Time `json:"open_until"`
	// Reason says why: "breaker" (failures) or "retry-after".
	Reason string `json:"reason"`
	// By is the worker that wrote the trip.
	By string `json:"by"`
	// OpenFor is the trip length to use again if a probe fails.
	OpenFor time.Duration `json:"open_for"`
	// Probes are the probe slots claimed since OpenUntil: worker → lease end.
	Probes map[string]time.Time `json:"probes,omitempty"`
	// Limit is the cluster-wide probe count.
	Limit uint32 `json:"limit"`
}

// Options tunes a Set.
type Options struct {
	// Logger receives trips and recoveries (default: discard).
	Logger *slog.Logger
	// OnTrip is called when this worker won the compare-and-set that opened a key until
	// until: the owner of the trip, which pauses the consumer of st.PauseType when set.
	OnTrip func(st Settings, until time.Time)
	// OnState is called on every local state change (for metrics).
	OnState func(key string, state State)
	// Clock returns the time (default time.Now).
	Clock func() time.Time
	// IdleAfter is how long a closed key with no failures, no shared trip and no call in
	// flight goes uncalled before the Set drops its breaker (default 10 min), so keys made
	// from templates (an http node's URL host) do not pile up. A dropped key starts afresh,
	// closed, on its next call.
	IdleAfter time.Duration
}

// State of a key as this worker sees it.
type State int

// States of a key.
const (
	Closed State = iota
	HalfOpen
	Open
)

func (s State) String() string { return [...]string{"closed", "half-open", "open"}[s] }

// Set holds one worker's breakers and the shared trips it watches.
type Set struct {
	kv     jetstream.KeyValue
	worker string
	opts   Options
	log    *slog.Logger
	now    func() time.Time

	mu     sync.RWMutex
	local  map[string]*local
	swept  time.Time        // when newLocal last looked for idle breakers
	trips  map[string]*Trip // by sanitised bucket key
	counts map[string]int   // shared consecutive failures, by sanitised bucket key
	ntrips atomic.Int32     // len(trips), read without the lock on every step
	nstrk  atomic.Int32     // len(counts), read without the lock on every success
	marker atomic.Int64     // the bucket's marker TTL (ns), read by Run; 0: none or not yet
	ready  chan struct{}
}

// local is this worker's breaker of one key, with what tells whether it is idle.
type local struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	used     atomic.Int64 // unix nanoseconds of the last admitted call
	inFlight atomic.Int32 // admitted calls not Done yet
}

// countPrefix starts the bucket keys that count a closed key's consecutive failures across
// the cluster. BucketKey never makes a '/', so these cannot collide with a trip's key.
const countPrefix = "failures/"

// Count is the shared record of a closed key's consecutive retryable failures, summed over
// every worker: failures on one worker and the next add up, so a dependency that fails for
// the whole cluster trips the breaker even when no single worker sees enough failures in a
// row. A success anywhere deletes it. Only failures write it: the healthy path never does.
type Count struct {
	// Key is the breaker key as configured.
	Key string `json:"key"`
	// Failures in a row, cluster-wide.
	Failures int `json:"failures"`
}

// IsCountKey reports whether a key of the breakers bucket holds a Count rather than a Trip.
func IsCountKey(bucketKey string) bool { return strings.HasPrefix(bucketKey, countPrefix) }

// New returns a Set for worker, sharing trips through kv (the breakers bucket).
func New(kv jetstream.KeyValue, worker string, opts Options) *Set {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	opts.IdleAfter = cmp.Or(opts.IdleAfter, DefaultIdleAfter)
	return &Set{kv: kv, worker: worker, opts: opts, log: opts.Logger, now: opts.Clock,
		local: map[string]*local{}, trips: map[string]*Trip{}, counts: map[string]int{},
		ready: make(chan struct{})}
}

// BucketKey maps a breaker key onto a valid KV key: characters KV keys cannot hold become '_'.
func BucketKey(key string) string {
	valid := key != "" && key[0] != '.' && key[len(key)-1] != '.'
	for i := 0; valid && i < len(key); i++ {
		c := key[i]
		valid = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=' || c == '.'
	}
	if valid {
		return key // the common case, without an allocation
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.Trim(b.String(), ".")
	if s == "" {
		s = "_"
	}
	return s
}

// Run watches the breakers bucket until ctx ends, keeping every trip in memory.
func (s *Set) Run(ctx context.Context) error {
	if st, err := s.kv.Status(ctx); err == nil {
		s.marker.Store(int64(st.LimitMarkerTTL()))
	}
	once := sync.Once{}
	defer once.Do(func() { close(s.ready) })
	kvwatch.Follow(ctx, func(ctx context.Context) (jetstream.KeyWatcher, error) { return s.kv.WatchAll(ctx) },
		func(e jetstream.KeyValueEntry) {
			if e == nil {
				once.Do(func() { close(s.ready) })
				return
			}
			s.apply(e)
		})
	return nil
}

// Ready is closed once the initial trips have been read.
func (s *Set) Ready() <-chan struct{} { return s.ready }

func (s *Set) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.ntrips.Store(int32(len(s.trips))); s.nstrk.Store(int32(len(s.counts))) }()
	if bk, ok := strings.CutPrefix(e.Key(), countPrefix); ok {
		var c Count
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &c) != nil || c.Failures <= 0 {
			delete(s.counts, bk)
		} else {
			s.counts[bk] = c.Failures
		}
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		if t := s.trips[e.Key()]; t != nil {
			delete(s.trips, e.Key())
			delete(s.local, e.Key()) // closed cluster-wide: start afresh
			s.state(t.Key, Closed)
		}
		return
	}
	var t Trip
	if json.Unmarshal(e.Value(), &t) != nil {
		return
	}
	prev := s.trips[e.Key()]
	s.trips[e.Key()] = &t
	if prev == nil || !prev.OpenUntil.Equal(t.OpenUntil) {
		s.state(t.Key, Open)
	}
}

func (s *Set) state(key string, st State) {
	if s.opts.OnState != nil {
		s.opts.OnState(key, st)
	}
}

// Ticket reports the outcome of an admitted call.
type Ticket struct {
	set   *Set
	key   string // the bucket key
	st    Settings
	done  func(error)
	lb    *local // the local breaker that admitted the call (closed path)
	probe string // the claimed probe slot, when the call is a half-open probe
}

// ErrExcluded marks an outcome that must not count for or against the breaker (permanent
// errors, validation errors, shutdown): pass it, or an error wrapping it, to Done.
var ErrExcluded = errors.New("excluded from the breaker")

// Probe reports whether the call is one of the half-open probes after a trip.
func (t *Ticket) Probe() bool { return t != nil && t.probe != "" }

// Done records the call's outcome: nil is a success, an error wrapping ErrExcluded does not
// count, any other error is a failure. A failure is also added to the key's shared count of
// consecutive failures, and the failure that brings it to the threshold trips the key for
// every worker (so Done may write to the bucket; a success writes only to end a streak).
func (t *Ticket) Done(ctx context.Context, err error) {
	if t == nil {
		return
	}
	if t.probe != "" {
		t.set.probeDone(ctx, t.key, t.probe, t.st, err)
		return
	}
	if t.done != nil {
		t.done(err)
		t.lb.inFlight.Add(-1)
	}
	if t.st.CoolDownOnly {
		return
	}
	switch {
	case err == nil:
		t.set.endStreak(ctx, t.key)
	case errors.Is(err, ErrExcluded):
	default:
		t.set.countFailure(ctx, t.key, t.st)
	}
}

// Allow asks whether a call to st.Key may go now. If not, it says how long to wait. The
// closed path takes no KV round trip. A key with CoolDownOnly set gets no ticket (nil, 0)
// while no trip holds it.
func (s *Set) Allow(ctx context.Context, st Settings) (*Ticket, time.Duration, error) {
	if st.CoolDownOnly && s.ntrips.Load() == 0 {
		return nil, 0, nil
	}
	st = st.withDefaults()
	bk := BucketKey(st.Key)
	now := s.now()
	s.mu.RLock()
	trip := s.trips[bk]
	cb := s.local[bk]
	s.mu.RUnlock()
	if trip != nil {
		if now.Before(trip.OpenUntil) {
			return nil, trip.OpenUntil.Sub(now), nil
		}
		id, err := s.claimProbe(ctx, bk, now)
		if err != nil {
			return nil, ProbeWait, err
		}
		if id == "" {
			return nil, ProbeWait, nil
		}
		return &Ticket{set: s, key: bk, st: st, probe: id}, 0, nil
	}
	if st.CoolDownOnly {
		return nil, 0, nil
	}
	if cb == nil {
		cb = s.newLocal(bk, st, now)
	}
	done, err := cb.cb.Allow()
	if err != nil {
		// Tripped here an instant ago; the shared record is on its way.
		return nil, st.OpenFor, nil
	}
	cb.inFlight.Add(1)
	cb.used.Store(now.UnixNano())
	return &Ticket{set: s, key: bk, st: st, done: done, lb: cb}, 0, nil
}

// OpenUntil reports whether st's key is open now, as this worker sees it (a shared trip, or
// its own breaker tripped an instant ago), and until when.
func (s *Set) OpenUntil(st Settings) (time.Time, bool) {
	st = st.withDefaults()
	bk := BucketKey(st.Key)
	now := s.now()
	s.mu.RLock()
	trip := s.trips[bk]
	cb := s.local[bk]
	s.mu.RUnlock()
	if trip != nil && now.Before(trip.OpenUntil) {
		return trip.OpenUntil, true
	}
	if trip == nil && cb != nil && cb.cb.State() == gobreaker.StateOpen {
		return now.Add(st.OpenFor), true
	}
	return time.Time{}, false
}

// countFailure adds one to the key's shared count of consecutive failures; at the threshold
// it trips the key (and the count starts afresh).
func (s *Set) countFailure(ctx context.Context, bk string, st Settings) {
	if s.kv == nil {
		return
	}
	s.mu.RLock()
	_, tripped := s.trips[bk]
	s.mu.RUnlock()
	if tripped {
		return // a call under way when the key opened: the trip counts for it
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ck := countPrefix + bk
	for range 5 {
		c := Count{Key: st.Key}
		var rev uint64
		e, err := s.kv.Get(ctx, ck)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			s.log.Warn("breaker: cannot read the failure count", "key", st.Key, "err", err)
			return
		default:
			_ = json.Unmarshal(e.Value(), &c)
			rev = e.Revision()
		}
		c.Failures++
		if c.Failures >= int(st.ConsecutiveFailures) {
			s.trip(ctx, bk, st, "breaker", st.OpenFor)
			if rev != 0 {
				_ = s.remove(ctx, ck, rev)
			}
			s.setCount(bk, 0)
			return
		}
		conflict, err := s.put(ctx, ck, c, rev)
		if conflict {
			continue
		}
		if err != nil {
			s.log.Warn("breaker: cannot count a failure", "key", st.Key, "err", err)
			return
		}
		s.setCount(bk, c.Failures)
		return
	}
}

// endStreak deletes the key's shared failure count after a success, when there is one: the
// only write a success ever makes, and only right after failures.
func (s *Set) endStreak(ctx context.Context, bk string) {
	if s.nstrk.Load() == 0 || s.kv == nil {
		return // no streak anywhere: the healthy path's check, without the lock
	}
	s.mu.RLock()
	n := s.counts[bk]
	s.mu.RUnlock()
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.remove(ctx, countPrefix+bk, 0); err != nil {
		s.log.Warn("breaker: cannot reset the failure count", "key", bk, "err", err)
		return
	}
	s.setCount(bk, 0)
}

// setCount records a key's shared failure count as this worker knows it (0: no streak).
func (s *Set) setCount(bk string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.counts, bk)
	} else {
		s.counts[bk] = n
	}
	s.nstrk.Store(int32(len(s.counts)))
}

func (s *Set) newLocal(bk string, st Settings, now time.Time) *local {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lb := s.local[bk]; lb != nil {
		return lb
	}
	if now.Sub(s.swept) >= s.opts.IdleAfter/4 {
		s.evictIdle(now)
	}
	gs := gobreaker.Settings{
		Name:        st.Key,
		MaxRequests: st.HalfOpenRequests,
		Timeout:     st.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= st.ConsecutiveFailures {
				return true
			}
			return st.FailureRatio > 0 && c.Requests >= st.MinRequests && float64(c.TotalFailures)/float64(c.Requests) >= st.FailureRatio
		},
		IsExcluded: func(err error) bool { return errors.Is(err, ErrExcluded) },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				// Share the trip off the caller's path.
				go s.trip(context.Background(), bk, st, "breaker", st.OpenFor)
			}
		},
	}
	if st.FailureRatio > 0 {
		gs.Interval = st.OpenFor
	}
	lb := &local{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gs)}
	lb.used.Store(now.UnixNano())
	s.local[bk] = lb
	return lb
}

// evictIdle drops the breakers of keys that are closed, have no failures here or
// cluster-wide, no call in flight, and no call for IdleAfter. The map only grows in newLocal,
// which calls it at most every IdleAfter/4, so the scan costs little per new key. s.mu is held.
func (s *Set) evictIdle(now time.Time) {
	s.swept = now
	idle := now.Add(-s.opts.IdleAfter).UnixNano()
	for bk, lb := range s.local {
		if lb.inFlight.Load() > 0 || lb.used.Load() > idle || s.trips[bk] != nil || s.counts[bk] > 0 {
			continue
		}
		if lb.cb.State() == gobreaker.StateClosed && lb.cb.Counts().ConsecutiveFailures == 0 {
			delete(s.local, bk)
		}
	}
}

// trip writes (or extends) the shared record with compare-and-set; the winner owns the trip.
func (s *Set) trip(ctx context.Context, bk string, st Settings, reason string, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for range 5 {
		now := s.now()
		until := now.Add(d)
		t := &Trip{Key: st.Key, OpenUntil: until, Reason: reason, By: s.worker, OpenFor: st.OpenFor, Limit: st.HalfOpenRequests}
		e, err := s.kv.Get(ctx, bk)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			s.log.Warn("breaker: cannot read trip", "key", st.Key, "err", err)
			return
		default:
			var cur Trip
			if json.Unmarshal(e.Value(), &cur) == nil {
				if !cur.OpenUntil.Before(until) {
					return // already open at least that long: someone else owns the trip
				}
				if reason == "breaker" && now.Before(cur.OpenUntil) {
					return // a call that was under way when the key opened: same outage
				}
			}
			rev = e.Revision()
		}
		conflict, err := s.put(ctx, bk, t, rev)
		if conflict {
			continue
		}
		if err != nil {
			s.log.Warn("breaker: cannot share trip", "key", st.Key, "err", err)
			return
		}
		s.mu.Lock()
		s.trips[bk] = t // do not wait for the watch to see our own trip
		s.ntrips.Store(int32(len(s.trips)))
		s.mu.Unlock()
		s.log.Warn("breaker open", "key", st.Key, "reason", reason, "until", until.Format(time.RFC3339))
		if s.opts.OnTrip != nil {
			s.opts.OnTrip(st, until)
		}
		return
	}
}

// CoolDown keeps key closed to every worker for d (a Retry-After): no call before it ends.
func (s *Set) CoolDown(ctx context.Context, st Settings, d time.Duration) {
	st = st.withDefaults()
	s.trip(ctx, BucketKey(st.Key), st, "retry-after", d)
}

// claimProbe takes one of the key's probe slots, cluster-wide, with compare-and-set, and
// returns its ID ("" when none is free).
func (s *Set) claimProbe(ctx context.Context, bk string, now time.Time) (string, error) {
	for range 5 {
		e, err := s.kv.Get(ctx, bk)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return "", nil // closed meanwhile: the watch will say so; try again shortly
		}
		if err != nil {
			return "", fmt.Errorf("breaker %s: %w", bk, err)
		}
		var t Trip
		if err := json.Unmarshal(e.Value(), &t); err != nil {
			return "", fmt.Errorf("breaker %s: %w", bk, err)
		}
		if now.Before(t.OpenUntil) {
			return "", nil
		}
		live := 0
		for w, until := range t.Probes {
			if until.After(now) {
				live++
			} else {
				delete(t.Probes, w)
			}
		}
		if uint32(live) >= max(t.Limit, 1) {
			return "", nil
		}
		if t.Probes == nil {
			t.Probes = map[string]time.Time{}
		}
		id := fmt.Sprintf("%s#%d", s.worker, now.UnixNano())
		t.Probes[id] = now.Add(ProbeLease)
		b, _ := json.Marshal(&t)
		if _, err := s.kv.Update(ctx, bk, b, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return "", fmt.Errorf("breaker %s: %w", bk, err)
		}
		s.state(t.Key, HalfOpen)
		return id, nil
	}
	return "", nil
}

// probeDone closes the key cluster-wide on a successful probe, opens it again on a failure,
// and frees the slot on an excluded outcome.
func (s *Set) probeDone(ctx context.Context, bk, id string, st Settings, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	switch {
	case err == nil:
		for range 5 {
			e, gerr := s.kv.Get(ctx, bk)
			if gerr != nil {
				return // already closed
			}
			var t Trip
			if json.Unmarshal(e.Value(), &t) == nil && s.now().Before(t.OpenUntil) {
				return // re-opened by someone else meanwhile
			}
			if derr := s.remove(ctx, bk, e.Revision()); derr == nil {
				s.mu.Lock()
				delete(s.trips, bk)
				delete(s.local, bk)
				s.ntrips.Store(int32(len(s.trips)))
				s.mu.Unlock()
				s.log.Info("breaker closed", "key", st.Key)
				s.state(st.Key, Closed)
				return
			}
		}
	case errors.Is(err, ErrExcluded):
		for range 5 {
			e, gerr := s.kv.Get(ctx, bk)
			if gerr != nil {
				return
			}
			var t Trip
			if json.Unmarshal(e.Value(), &t) != nil {
				return
			}
			if _, ok := t.Probes[id]; !ok {
				return // its lease ended, or the trip was rewritten
			}
			delete(t.Probes, id)
			b, _ := json.Marshal(&t)
			if _, uerr := s.kv.Update(ctx, bk, b, e.Revision()); uerr == nil {
				return
			}
		}
	default:
		s.trip(ctx, bk, st, "breaker", st.OpenFor)
	}
}

// Open returns the keys open or half-open now, with their trips (for /api/breakers, top).
func (s *Set) Open() []Trip {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Trip, 0, len(s.trips))
	for _, t := range s.trips {
		out = append(out, *t)
	}
	return out
}

// Tripped reports whether any key is open or half-open now, as this worker sees it: one
// atomic load, so a step with no breaker of its own skips the check while nothing is.
func (s *Set) Tripped() bool { return s.ntrips.Load() > 0 }

// remove deletes key (only at revision rev when rev > 0). When the bucket has a marker TTL
// (setup gives it one) it purges instead, with that TTL on the marker, so keys that come and
// go (a failure streak, a trip) leave nothing behind for good; a delete's marker would stay.
func (s *Set) remove(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	if ttl := time.Duration(s.marker.Load()); ttl > 0 {
		return s.kv.Purge(ctx, key, append(opts, jetstream.PurgeTTL(ttl))...)
	}
	return s.kv.Delete(ctx, key, opts...)
}

// put creates key (rev 0) or updates it at rev with v as JSON; conflict says another writer
// got there first (read again and retry).
func (s *Set) put(ctx context.Context, key string, v any, rev uint64) (conflict bool, err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, key, b)
	} else {
		_, err = s.kv.Update(ctx, key, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true, nil
	}
	return false, err
}
