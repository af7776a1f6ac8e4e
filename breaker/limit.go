package breaker

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits keeps one worker's share of cluster-wide rate limits. A limit of R per second and
// burst B, on a node type that N live workers run, becomes R/N per second and burst
// max(1, B/N) in each worker: the sum stays within the limit as long as the count of live
// workers is right (it comes from worker presence, refreshed every few seconds). A worker
// that joins or leaves shifts the shares at the next refresh.
type Limits struct {
	share func(nodeType string) int
	now   func() time.Time

	mu     sync.Mutex
	m      map[string]*shareLimiter
	tokens map[string]*tokenBucket
}

type shareLimiter struct {
	lim    *rate.Limiter
	n      int
	rate   float64
	burst  int
	nodeTy string
}

// NewLimits returns Limits whose shares divide by share(nodeType) (at least 1).
func NewLimits(share func(nodeType string) int) *Limits {
	return &Limits{share: share, now: time.Now, m: map[string]*shareLimiter{}}
}

// Reserve takes one call from the limit key (perSecond, burst across the cluster) and
// returns how long to wait before making it (0: now), and a func that gives the call back
// when the caller will not wait that long.
func (l *Limits) Reserve(key, nodeType string, perSecond float64, burst int) (time.Duration, func()) {
	n := 1
	if l.share != nil {
		n = max(l.share(nodeType), 1)
	}
	burst = max(burst, 1)
	l.mu.Lock()
	sl := l.m[key]
	if sl == nil || sl.n != n || sl.rate != perSecond || sl.burst != burst {
		r := rate.Limit(perSecond / float64(n))
		b := max(1, int(math.Floor(float64(burst)/float64(n))))
		if sl == nil {
			sl = &shareLimiter{lim: rate.NewLimiter(r, b)}
			l.m[key] = sl
		} else {
			now := l.now()
			sl.lim.SetLimitAt(now, r)
			sl.lim.SetBurstAt(now, b)
		}
		sl.n, sl.rate, sl.burst, sl.nodeTy = n, perSecond, burst, nodeType
	}
	l.mu.Unlock()
	now := l.now()
	res := sl.lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, func() {}
	}
	return res.DelayFrom(now), func() { res.CancelAt(l.now()) }
}

// Tokens is a reservation of units from a token limit (ReserveTokens), to be settled once
// the real count is known.
type Tokens struct {
	l *Limits
	b *tokenBucket
	n float64
}

// Settle corrects the reservation to actual units: the difference is given back, or taken
// as well (the limit may then be in debt, which the next callers wait out).
func (t *Tokens) Settle(actual int) {
	if t == nil {
		return
	}
	t.l.mu.Lock()
	t.b.give(t.n-float64(actual), t.l.now())
	t.l.mu.Unlock()
	t.n = float64(actual)
}

// Cancel gives the whole reservation back (the call was not made).
func (t *Tokens) Cancel() { t.Settle(0) }

// tokenBucket is a token bucket that can go into debt and take units back, which x/time/rate
// cannot do once a reservation's time has come: a model call reserves its tokens from an
// estimate and learns the real count only from the reply.
type tokenBucket struct {
	perSecond, burst float64
	have             float64
	at               time.Time
	n                int // the share it was made for
	limit            float64
}

func (b *tokenBucket) refill(now time.Time) {
	if d := now.Sub(b.at).Seconds(); d > 0 {
		b.have = min(b.burst, b.have+d*b.perSecond)
	}
	b.at = now
}

func (b *tokenBucket) give(n float64, now time.Time) {
	b.refill(now)
	b.have = min(b.burst, b.have+n)
}

// ReserveTokens takes n units (tokens) from the limit key of perMinute units a minute across
// the cluster, shared like Reserve (the burst is a minute's worth), and returns how long to
// wait before the call, and the reservation to settle with the real count. A request of more
// than a worker's share of a minute waits for the whole share.
func (l *Limits) ReserveTokens(key, nodeType string, perMinute float64, n int) (time.Duration, *Tokens) {
	if perMinute <= 0 {
		return 0, nil
	}
	share := 1
	if l.share != nil {
		share = max(l.share(nodeType), 1)
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tokens == nil {
		l.tokens = map[string]*tokenBucket{}
	}
	b := l.tokens[key]
	if b == nil || b.n != share || b.limit != perMinute {
		burst := perMinute / float64(share)
		if b == nil {
			b = &tokenBucket{have: burst, at: now}
			l.tokens[key] = b
		}
		b.refill(now)
		b.perSecond, b.burst, b.n, b.limit = burst/60, burst, share, perMinute
		b.have = min(b.have, burst)
	}
	b.refill(now)
	want := min(float64(n), b.burst)
	b.have -= want
	var wait time.Duration
	if b.have < 0 {
		wait = time.Duration(-b.have / b.perSecond * float64(time.Second))
	}
	return wait, &Tokens{l: l, b: b, n: want}
}
