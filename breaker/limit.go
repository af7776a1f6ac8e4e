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

	mu sync.Mutex
	m  map[string]*shareLimiter
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
