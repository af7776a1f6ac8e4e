package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchImpactSmall runs `jetflow bench impact` at a small size, as a process (its
// jetflow mode starts worker processes of the same binary and kills one): every mode
// reports, jetflow completes every run, and the chart is an SVG with both providers
// (the primary answers before its outage).
func TestBenchImpactSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills worker processes for about 40 s: skipped with -short")
	}
	t.Parallel()
	chart := filepath.Join(t.TempDir(), "impact.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, jetflowBin, "bench", "impact", "--runs", "40", "--over", "8s",
		"--outage-at", "3s", "--outage", "3s", "--chart", chart, "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench impact: %v\n%s", err, stderr.String())
	}
	var res struct {
		Modes []struct {
			Name      string  `json:"name"`
			Runs      int     `json:"runs"`
			Failed    int     `json:"failed"`
			Calls     int     `json:"calls"`
			Wasted    int     `json:"calls_wasted"`
			USDWasted float64 `json:"usd_wasted"`
		} `json:"modes"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("bench impact --json: %v\n%s", err, out)
	}
	if len(res.Modes) != 3 {
		t.Fatalf("modes %+v, want three", res.Modes)
	}
	for _, m := range res.Modes {
		if m.Runs != 40 || m.Calls == 0 || m.Wasted < 0 || m.Wasted > m.Calls {
			t.Errorf("mode %+v: want 40 runs, some calls, wasted within them", m)
		}
	}
	if j := res.Modes[2]; j.Name != "jetflow" || j.Failed != 0 {
		t.Errorf("jetflow mode %+v: want every run completed (the fallback provider answers during the outage)", j)
	}
	if res.Modes[0].Failed == 0 {
		t.Errorf("no resilience lost no run against a 3-second outage and 17 %% failures: %+v", res.Modes[0])
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "primary ok", "secondary ok", "primary down", "worker killed"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("the chart has no %q", want)
		}
	}
}
