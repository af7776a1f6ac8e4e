package nodes_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/nodes"
)

// FuzzParseRetryAfter checks that no header value panics ParseRetryAfter or yields a wait
// outside [0, MaxRetryAfter], and that a refused value yields no wait.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	for _, seed := range []string{
		"", "0", "7", "-5", "3600", "3601", "007", " 120 ", "-", "+7", "1.5", "7s", "soon",
		"99999999999999999999999999999999", "-99999999999999999999999999999999",
		"Wed, 21 Oct 2015 07:28:00 GMT",
		now.Add(90 * time.Second).Format(http.TimeFormat),
		now.Add(48 * time.Hour).Format(http.TimeFormat),
		"Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994",
		"Fri, 31 Dec 9999 23:59:59 GMT",
		"Mon, 01 Jan 0001 00:00:00 GMT",
		"\x00", "\xff\xfe", "１２",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := nodes.ParseRetryAfter(v, now)
		if d < 0 || d > nodes.MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v, outside [0, %v]", v, d, nodes.MaxRetryAfter)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, false: a refused value must give 0", v, d)
		}
	})
}
