package metrics

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Latency bins of a window: geometric upper bounds from 1 ms, each 25 % above the last, up
// to ~50 min (anything longer counts in the last bin); a percentile is reported as its bin's
// upper bound, so at most 25 % high.
const (
	latencyBins  = 68
	binBase      = float64(time.Millisecond)
	binGrowth    = 1.25
	logBinGrowth = 0.22314355131420976 // math.Log(binGrowth)
)

// binOf returns the latency bin of d.
func binOf(d time.Duration) int {
	if float64(d) <= binBase {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/binBase) / logBinGrowth))
	return min(i, latencyBins-1)
}

// binUpper returns the upper bound of bin i.
func binUpper(i int) time.Duration {
	return time.Duration(binBase * math.Pow(binGrowth, float64(i)))
}

// bucket counts the samples of one slice of time.
type bucket struct {
	start  int64 // unix nanoseconds of the slice's start; 0 = empty
	n      uint32
	failed uint32
	lat    [latencyBins]uint32
}

// window is a sliding window of fixed buckets. Adding a sample allocates nothing; the caller
// holds the lock.
type window struct {
	width   time.Duration
	buckets []bucket
}

func newWindow(size, width time.Duration) *window {
	n := max(int(size/width), 1)
	return &window{width: width, buckets: make([]bucket, n)}
}

// slot returns the bucket of time t, emptied if it held an older slice.
func (w *window) slot(t time.Time) *bucket {
	start := t.UnixNano() - t.UnixNano()%int64(w.width)
	b := &w.buckets[(start/int64(w.width))%int64(len(w.buckets))]
	if b.start != start {
		*b = bucket{start: start}
	}
	return b
}

// add counts one outcome at t; a negative took adds no latency.
func (w *window) add(t time.Time, failed bool, took time.Duration) {
	b := w.slot(t)
	b.n++
	if failed {
		b.failed++
	}
	if took >= 0 {
		b.lat[binOf(took)]++
	}
}

// reset empties the window.
func (w *window) reset() { clear(w.buckets) }

// Stats summarises samples over a window.
type Stats struct {
	// Samples is how many outcomes the window holds; Failed how many of them failed.
	Samples int `json:"samples"`
	Failed  int `json:"failed"`
	// ErrorRate is Failed/Samples (0 without samples).
	ErrorRate float64 `json:"error_rate"`
	// P50, P95 and P99 are latency percentiles, to within 25 %.
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
}

// stats sums the buckets of the last size before now.
func (w *window) stats(now time.Time) Stats {
	oldest := now.Add(-w.width * time.Duration(len(w.buckets))).UnixNano()
	var s Stats
	var lat [latencyBins]uint64
	var timed uint64
	for i := range w.buckets {
		b := &w.buckets[i]
		if b.start == 0 || b.start+int64(w.width) <= oldest || b.start > now.UnixNano() {
			continue
		}
		s.Samples += int(b.n)
		s.Failed += int(b.failed)
		for j, c := range b.lat {
			lat[j] += uint64(c)
			timed += uint64(c)
		}
	}
	if s.Samples == 0 {
		return s
	}
	s.ErrorRate = float64(s.Failed) / float64(s.Samples)
	if timed > 0 {
		s.P50, s.P95, s.P99 = quantile(&lat, timed, .50), quantile(&lat, timed, .95), quantile(&lat, timed, .99)
	}
	return s
}

// quantile returns the upper bound of the bin holding the q-th of n latencies.
func quantile(lat *[latencyBins]uint64, n uint64, q float64) time.Duration {
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i, c := range lat {
		seen += c
		if seen >= rank && c > 0 {
			return binUpper(i)
		}
	}
	return binUpper(latencyBins - 1)
}

// sortBy sorts s by the key key returns.
func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}
