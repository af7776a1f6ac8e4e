package workflow

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed cron expression: six fields, seconds first (the server's form), each a
// set of allowed values.
type Cron struct {
	fields [6]uint64 // second, minute, hour, day of month, month, day of week: bit i = value i
	domAny bool
	dowAny bool
	loc    *time.Location
}

var cronRanges = [6][2]int{{0, 59}, {0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 7}}

// cronMacros are the server's predefined schedules.
var cronMacros = map[string]string{
	"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
	"@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}

// ParseCron parses a cron expression of 5 fields (minute precision; a 0 seconds field is
// put first) or 6 (seconds first), or one of @yearly, @monthly, @weekly, @daily, @hourly,
// in time zone tz (empty: UTC). Fields take *, ?, numbers, a-b ranges, /step and lists.
func ParseCron(expr, tz string) (*Cron, string, error) {
	loc := time.UTC
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, "", fmt.Errorf("time zone %q: not a zone name such as Europe/Paris", tz)
		}
		loc = l
	}
	expr = strings.TrimSpace(expr)
	if m, ok := cronMacros[expr]; ok {
		expr = m
	}
	f := strings.Fields(expr)
	switch len(f) {
	case 5:
		f = append([]string{"0"}, f...)
	case 6:
	default:
		return nil, "", fmt.Errorf("cron %q: give 5 fields (minute hour day month weekday) or 6 (seconds first)", expr)
	}
	c := &Cron{loc: loc}
	for i, s := range f {
		bits, err := cronField(s, cronRanges[i][0], cronRanges[i][1])
		if err != nil {
			return nil, "", fmt.Errorf("cron %q: field %d (%s): %w", expr, i+1, []string{"second", "minute", "hour", "day of month", "month", "day of week"}[i], err)
		}
		c.fields[i] = bits
	}
	if c.fields[5]&(1<<7) != 0 { // 7 is Sunday too
		c.fields[5] |= 1
	}
	c.domAny, c.dowAny = f[3] == "*" || f[3] == "?", f[5] == "*" || f[5] == "?"
	return c, strings.Join(f, " "), nil
}

func cronField(s string, lo, hi int) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(s, ",") {
		rng, step := part, 1
		if r, st, ok := strings.Cut(part, "/"); ok {
			n, err := strconv.Atoi(st)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q", st)
			}
			rng, step = r, n
		}
		a, b := lo, hi
		switch {
		case rng == "*" || rng == "?":
		case strings.Contains(rng, "-"):
			x, y, _ := strings.Cut(rng, "-")
			var err1, err2 error
			a, err1 = strconv.Atoi(x)
			b, err2 = strconv.Atoi(y)
			if err1 != nil || err2 != nil || a > b {
				return 0, fmt.Errorf("range %q", rng)
			}
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return 0, fmt.Errorf("value %q", rng)
			}
			a, b = n, n
			if strings.Contains(part, "/") {
				b = hi
			}
		}
		if a < lo || b > hi {
			return 0, fmt.Errorf("%q is outside %d-%d", part, lo, hi)
		}
		for v := a; v <= b; v += step {
			bits |= 1 << v
		}
	}
	if bits == 0 {
		return 0, errors.New("empty")
	}
	return bits, nil
}

func (c *Cron) has(i, v int) bool { return c.fields[i]&(1<<v) != 0 }

// Next returns the first fire time after t (zero if none within 5 years).
func (c *Cron) Next(t time.Time) time.Time {
	t = t.In(c.loc).Truncate(time.Second).Add(time.Second)
	end := t.AddDate(5, 0, 0)
	for t.Before(end) {
		switch {
		case !c.has(4, int(t.Month())):
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, c.loc)
		case !c.dayOK(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, c.loc)
		case !c.has(2, t.Hour()):
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, c.loc)
		case !c.has(1, t.Minute()):
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, c.loc)
		case !c.has(0, t.Second()):
			t = t.Add(time.Second)
		default:
			return t
		}
	}
	return time.Time{}
}

// dayOK applies cron's rule: with both day of month and day of week restricted, either may
// match.
func (c *Cron) dayOK(t time.Time) bool {
	dom, dow := c.has(3, t.Day()), c.has(5, int(t.Weekday()))
	switch {
	case c.domAny && c.dowAny:
		return true
	case c.domAny:
		return dow
	case c.dowAny:
		return dom
	}
	return dom || dow
}
