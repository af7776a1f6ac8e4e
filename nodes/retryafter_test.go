package nodes_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/nodes"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	at := now.Add
	tests := []struct {
		name string
		v    string
		want time.Duration
		ok   bool
	}{
		{"seconds", "7", 7 * time.Second, true},
		{"zero", "0", 0, true},
		{"leading zeros", "007", 7 * time.Second, true},
		{"surrounding spaces", " \t120 ", 2 * time.Minute, true},
		{"exactly an hour", "3600", time.Hour, true},
		{"over an hour is clamped", "3601", time.Hour, true},
		{"a day is clamped", "86400", time.Hour, true},
		{"more digits than int64 holds", "99999999999999999999999999999999", time.Hour, true},
		{"negative is now", "-5", 0, true},
		{"negative huge is now", "-99999999999999999999999999", 0, true},
		{"RFC 1123 date", at(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"RFC 1123 date as servers write it", "Sat, 14 Mar 2026 15:10:26 GMT", time.Minute, true},
		{"RFC 850 date", at(30 * time.Second).Format(time.RFC850), 30 * time.Second, true},
		{"ANSI C date", at(45 * time.Second).Format(time.ANSIC), 45 * time.Second, true},
		{"date now", now.Format(http.TimeFormat), 0, true},
		{"date in the past", "Wed, 21 Oct 2015 07:28:00 GMT", 0, true},
		{"date far ahead is clamped", at(48 * time.Hour).Format(http.TimeFormat), time.Hour, true},
		{"empty", "", 0, false},
		{"spaces only", "   ", 0, false},
		{"minus only", "-", 0, false},
		{"plus sign", "+7", 0, false},
		{"fraction", "1.5", 0, false},
		{"Go duration", "7s", 0, false},
		{"word", "soon", 0, false},
		{"digits then junk", "7 seconds", 0, false},
		{"space inside", "1 0", 0, false},
		{"RFC 3339 date", at(time.Minute).Format(time.RFC3339), 0, false},
		{"date with a bad day", "Sat, 32 Mar 2026 15:10:26 GMT", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := nodes.ParseRetryAfter(tt.v, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func ExampleParseRetryAfter() {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, v := range []string{"120", "Fri, 02 Jan 2026 03:05:05 GMT", "86400", "soon"} {
		d, ok := nodes.ParseRetryAfter(v, now)
		fmt.Println(d, ok)
	}
	// Output:
	// 2m0s true
	// 1m0s true
	// 1h0m0s true
	// 0s false
}
