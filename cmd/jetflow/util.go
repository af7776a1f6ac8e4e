package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// readArg reads a JSON|@file|@- argument.
func (a *app) readArg(flag, v string) ([]byte, error) {
	switch {
	case v == "@-":
		b, err := io.ReadAll(io.LimitReader(a.stdin, 64<<20))
		if err != nil {
			return nil, usageErr(fmt.Errorf("%s: read standard input: %w", flag, err))
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, usageErr(fmt.Errorf("%s: no file %s", flag, v[1:]))
			}
			return nil, usageErr(fmt.Errorf("%s: %w", flag, err))
		}
		return b, nil
	}
	return []byte(v), nil
}

// age formats how long ago t was, briefly.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// since parses a --since duration into a time: a Go duration (90m, 1h30m) that may also
// count days (7d, 30d, 1d12h, 1.5d; a day is 24 hours).
func since(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	d, err := parseDays(v)
	if err != nil || d < 0 {
		return time.Time{}, usageErr(fmt.Errorf("%s %q: use a duration such as 7d, 1d12h, 1h or 30m", flag, v))
	}
	return time.Now().Add(-d), nil
}

// parseDays is time.ParseDuration with a "d" unit of 24 hours, in any position.
func parseDays(v string) (time.Duration, error) {
	if strings.ContainsAny(v, "+-") {
		return 0, fmt.Errorf("bad duration %q: no signs", v)
	}
	var total time.Duration
	rest := v
	for {
		i := strings.IndexByte(rest, 'd')
		if i < 0 {
			break
		}
		// The number just before the 'd': digits and at most one dot.
		j := i
		for j > 0 && (rest[j-1] >= '0' && rest[j-1] <= '9' || rest[j-1] == '.') {
			j--
		}
		n, err := strconv.ParseFloat(rest[j:i], 64)
		if err != nil || j > 0 && !strings.ContainsAny(rest[j-1:j], "hms") {
			// Not a count of days, or glued to something that is not a unit ("1x2d").
			return 0, fmt.Errorf("bad duration %q", v)
		}
		if n > float64(math.MaxInt64)/float64(24*time.Hour) {
			return 0, fmt.Errorf("duration %q is too long", v)
		}
		total += time.Duration(n * float64(24*time.Hour))
		rest = rest[:j] + rest[i+1:]
	}
	if rest == "" {
		return total, nil
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	return total + d, nil
}

// short cuts s to at most n runes, marking a cut with "…"; it never splits a UTF-8 sequence.
func short(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}

// groupHelp is the RunE of a command group: bare, it shows help; with an unknown subcommand,
// cobra.NoArgs turns it into a usage error (exit 2) instead of help and exit 0.
func groupHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }
