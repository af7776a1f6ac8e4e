package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// benchJSON is the part of `bench --json` the tests read.
type benchJSON struct {
	Runs          int     `json:"runs"`
	Steps         int     `json:"steps"`
	Seconds       float64 `json:"seconds"`
	StepsPerSec   float64 `json:"steps_per_sec"`
	RunsPerSec    float64 `json:"runs_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	RunP50ms      float64 `json:"run_p50_ms"`
	RunP99ms      float64 `json:"run_p99_ms"`
	LatencySample int     `json:"latency_sample"`
	NATS          string  `json:"nats"`
	Baseline      *struct {
		StepsPerSec float64 `json:"steps_per_sec"`
	} `json:"baseline"`
	Raw *struct {
		StepsPerSec float64 `json:"steps_per_sec"`
	} `json:"raw"`
	Ratio   float64 `json:"ratio"`
	Pairs   int     `json:"pairs"`
	Jetflow []struct {
		StepsPerSec float64 `json:"steps_per_sec"`
	} `json:"jetflow"`
	Baselines []struct {
		Name    string    `json:"name"`
		Skipped string    `json:"skipped"`
		Ratios  []float64 `json:"ratios"`
		Ratio   float64   `json:"ratio"`
	} `json:"baselines"`
}

func decodeBench(t *testing.T, r result) benchJSON {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("bench: %s", r)
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
		t.Fatalf("bench --json is not one JSON object: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"steps_per_sec", "p50_ms", "p99_ms", "runs", "steps", "seconds", "runs_per_sec", "run_p50_ms", "run_p99_ms"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("bench --json lacks %q:\n%s", k, r.stdout)
		}
	}
	var b benchJSON
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBenchEmbedded runs `jetflow bench` without --nats or NATS_URL: on an embedded server.
// Not parallel: it clears NATS_URL.
func TestBenchEmbedded(t *testing.T) {
	t.Setenv("NATS_URL", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := decodeBench(t, runCLI(t, ctx, "", "bench", "--runs", "50", "--steps", "3", "--concurrency", "8", "--json"))
	if b.Runs != 50 || b.Steps != 150 || b.NATS != "embedded" {
		t.Errorf("bench: runs %d, steps %d, nats %q; want 50, 150, embedded", b.Runs, b.Steps, b.NATS)
	}
	if b.Seconds <= 0 || b.StepsPerSec <= 0 || b.RunsPerSec <= 0 || b.LatencySample != 150 {
		t.Errorf("bench: seconds %v, steps/s %v, runs/s %v, latency sample %d; want positive figures over 150 node states", b.Seconds, b.StepsPerSec, b.RunsPerSec, b.LatencySample)
	}
	if b.P99ms < b.P50ms || b.RunP99ms < b.RunP50ms || b.RunP50ms <= 0 {
		t.Errorf("bench: latencies p50 %v p99 %v, run p50 %v p99 %v: want 0 < p50 ≤ p99", b.P50ms, b.P99ms, b.RunP50ms, b.RunP99ms)
	}
}

// TestBenchTarget runs `jetflow bench --baseline` against a server given by --nats, two pairs,
// with every baseline (the Watermill chain built from bench/watermill), and checks that it
// leaves nothing behind.
func TestBenchTarget(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := decodeBench(t, runCLI(t, ctx, "", "bench", "--nats", srv.ClientURL(), "--runs", "20", "--steps", "2", "--concurrency", "4", "--payload", "512", "--baseline", "--pairs", "2", "--json"))
	if b.Runs != 20 || b.Steps != 40 || b.NATS != srv.ClientURL() {
		t.Errorf("bench: runs %d, steps %d, nats %q; want 20, 40, %s", b.Runs, b.Steps, b.NATS, srv.ClientURL())
	}
	if b.Baseline == nil || b.Baseline.StepsPerSec <= 0 || b.Raw == nil || b.Raw.StepsPerSec <= 0 || b.Ratio <= 0 {
		t.Errorf("bench --baseline: want the hand loop's and the raw chain's figures and a ratio:\n%+v", b)
	}
	if b.Pairs != 2 || len(b.Jetflow) != 2 {
		t.Errorf("bench --pairs 2: pairs %d, %d jetflow runs; want 2 and 2", b.Pairs, len(b.Jetflow))
	}
	var names []string
	for _, bl := range b.Baselines {
		names = append(names, bl.Name)
		if bl.Skipped != "" || len(bl.Ratios) != 2 || bl.Ratio <= 0 {
			t.Errorf("baseline %s: skipped %q, ratios %v, median %v; want it run twice", bl.Name, bl.Skipped, bl.Ratios, bl.Ratio)
		}
	}
	if got := strings.Join(names, ", "); got != "hand loop, leader loop, watermill, raw chain" {
		t.Errorf("baselines %s; want hand loop, leader loop, watermill, raw chain", got)
	}
	_, js := srv.Connect(t)
	var left []string
	for name := range js.StreamNames(ctx).Name() {
		left = append(left, name)
	}
	if len(left) > 0 {
		t.Errorf("bench left streams behind: %v", left)
	}

	// The text form says what it measured; --service adds the run of service nodes.
	r := runCLI(t, ctx, "", "bench", "--nats", srv.ClientURL(), "--runs", "5", "--steps", "2", "--concurrency", "2", "--service")
	if r.code != 0 {
		t.Fatalf("bench: %s", r)
	}
	for _, want := range []string{"5 runs × 2 noop steps", "steps/s", "step latency p50", "run latency  p50", "each step a service node answered by a Go micro service", "jetflow / service "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, args := range [][]string{
		{"--runs", "0"},
		{"--steps", "0"},
		{"--concurrency", "0"},
		{"--payload", "-1"},
		{"--payload", "999999999"},
		{"--replicas", "7"},
		{"--pairs", "0"},
		{"--watermill", "/bin/true"},
		{"--baseline", "--watermill", "/no/such/jetflow-bench-watermill"},
	} {
		if r := runCLI(t, ctx, "", append([]string{"bench", "--nats", "nats://127.0.0.1:1"}, args...)...); r.code != exitUsage {
			t.Errorf("bench %v: want exit 2, got %s", args, r)
		}
	}
}
