package workflow

import (
	"testing"
	"time"
)

func TestCronNext(t *testing.T) {
	t.Parallel()
	from := time.Date(2026, 12, 3, 13, 30, 15, 0, time.UTC) // a Thursday
	for _, tc := range []struct{ expr, tz, want string }{
		{"*/15 * * * *", "", "2026-12-03T13:45:00Z"},
		{"0 9 * * 1-5", "", "2026-12-04T09:00:00Z"},
		{"30 */10 * * * *", "", "2026-12-03T13:30:30Z"},
		{"0 9 * * *", "Europe/Paris", "2026-12-04T08:00:00Z"},
		{"@hourly", "", "2026-12-03T14:00:00Z"},
		{"0 0 1 1 *", "", "2027-01-01T00:00:00Z"},
		{"0 12 * * 0", "", "2026-12-06T12:00:00Z"},
		{"0 12 * * 7", "", "2026-12-06T12:00:00Z"},
	} {
		c, _, err := ParseCron(tc.expr, tc.tz)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := c.Next(from).UTC().Format(time.RFC3339); got != tc.want {
			t.Errorf("%s (%s): next %s, want %s", tc.expr, tc.tz, got, tc.want)
		}
	}
	for _, bad := range []string{"", "* * *", "61 * * * *", "*/0 * * * *", "a b c d e", "5-1 * * * *", "* * * * * * *"} {
		if _, _, err := ParseCron(bad, ""); err == nil {
			t.Errorf("ParseCron(%q) accepted it", bad)
		}
	}
	if _, _, err := ParseCron("* * * * *", "Mars/Olympus"); err == nil {
		t.Error("an unknown time zone was accepted")
	}
}
