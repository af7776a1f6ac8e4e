package nodes

import (
	"net/http"
	"strings"
	"time"
)

// MaxRetryAfter is the longest wait ParseRetryAfter returns: a server asking for more is
// asked again after an hour rather than trusted with a step for days.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After header value (RFC 9110, section 10.2.3): either
// delta-seconds ("120") or an HTTP date in any of the three forms http.ParseTime accepts
// (RFC 1123, RFC 850, ANSI C asctime), taken relative to now. Surrounding spaces are ignored.
// A negative delta or a date in the past gives 0; anything longer than MaxRetryAfter gives
// MaxRetryAfter. ok is false, and the duration 0, when v is neither form.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, ok := parseDeltaSeconds(v); ok {
		return secs, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// parseDeltaSeconds reads an optional '-' and then digits only, clamped to [0, MaxRetryAfter]
// without overflowing however many digits there are.
func parseDeltaSeconds(v string) (time.Duration, bool) {
	neg := false
	if v[0] == '-' {
		neg, v = true, v[1:]
	}
	if v == "" {
		return 0, false
	}
	limit := int64(MaxRetryAfter / time.Second)
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= limit { // past the limit the value no longer matters, only the syntax
			n = n*10 + int64(c-'0')
		}
	}
	if neg {
		return 0, true
	}
	return time.Duration(min(n, limit)) * time.Second, true
}
