package main

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestSinceDays(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"30m", 30 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"7d", 7 * 24 * time.Hour},
		{"30d", 30 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{"2d3h4m5s", 2*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second},
		{"12h1d", 36 * time.Hour},
		{"0d", 0},
	} {
		before := time.Now()
		got, err := since("--since", c.in)
		after := time.Now()
		if err != nil {
			t.Errorf("since(%q): %v", c.in, err)
			continue
		}
		if c.in == "" {
			if !got.IsZero() {
				t.Errorf("since(\"\") = %v, want the zero time", got)
			}
			continue
		}
		// got is now - want, for a now between before and after.
		if got.Before(before.Add(-c.want)) || got.After(after.Add(-c.want)) {
			t.Errorf("since(%q) = now - %v, want now - %v", c.in, before.Sub(got), c.want)
		}
	}
	for _, bad := range []string{"d", "7", "7days", "-1d", "1d-2h", "1x2d", "1.2.3d", "+1d", "forever", "1e400d"} {
		_, err := since("--since", bad)
		if code := exitCode(err); err == nil || code != exitUsage || !strings.Contains(err.Error(), "7d") {
			t.Errorf("since(%q): want a usage error naming 7d, got %v (exit %d)", bad, err, code)
		}
	}
}

func TestShortIsRuneAware(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello world", 6, "hello…"},
		{"ünïcödé tëxt", 8, "ünïcödé…"},
		{"日本語のエラー", 4, "日本語…"},
		{"🙂🙂🙂", 2, "🙂…"},
		{"abc", 0, ""},
	} {
		got := short(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) || utf8.RuneCountInString(got) > max(c.n, 0) {
			t.Errorf("short(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
