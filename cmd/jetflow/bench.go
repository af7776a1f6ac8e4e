package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/benchjs"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/workflow"
)

// benchReport is what `jetflow bench --json` prints.
type benchReport struct {
	Runs          int     `json:"runs"`
	Steps         int     `json:"steps"`
	StepsPerRun   int     `json:"steps_per_run"`
	Concurrency   int     `json:"concurrency"`
	PayloadBytes  int     `json:"payload_bytes"`
	Replicas      int     `json:"replicas"`
	NATS          string  `json:"nats"`
	Seconds       float64 `json:"seconds"`
	StepsPerSec   float64 `json:"steps_per_sec"`
	RunsPerSec    float64 `json:"runs_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	LatencySample int     `json:"latency_sample"`
	RunP50ms      float64 `json:"run_p50_ms"`
	RunP99ms      float64 `json:"run_p99_ms"`
	// With --baseline: the hand-written pipeline, the raw chain, and jetflow's share of each.
	Baseline *benchFigures `json:"baseline,omitempty"`
	Raw      *benchFigures `json:"raw,omitempty"`
	Ratio    float64       `json:"ratio,omitempty"`
	RawRatio float64       `json:"raw_ratio,omitempty"`
}

// benchFigures are the throughput figures of a hand-written run.
type benchFigures struct {
	Seconds     float64 `json:"seconds"`
	StepsPerSec float64 `json:"steps_per_sec"`
	RunsPerSec  float64 `json:"runs_per_sec"`
}

func (a *app) benchCmd() *cobra.Command {
	var (
		runs, steps, concurrency, payload, replicas int
		baseline                                    bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput and latency: N runs of a linear noop workflow through an in-process worker",
		Long: "bench starts --runs runs of a linear workflow of --steps noop nodes, then starts a worker\n" +
			"with --concurrency slots in this process and times it until every run ended. It uses a\n" +
			"random prefix of its own (set up first, deleted afterwards) on the server --nats names, or\n" +
			"on an embedded server in a temporary directory when neither --nats nor NATS_URL is set.\n" +
			"Setup and starting the runs are not timed.\n\n" +
			"Step latency is from the moment a step can run (its parent's result recorded; for a first\n" +
			"step, the worker's start) to its own result, over a sample of node states. Run latency is\n" +
			"end.at − max(run created, worker start). Every run is queued before the worker starts, so\n" +
			"both include the wait behind the rest of the batch: they are latencies under full load.\n\n" +
			"--baseline also runs, on the same server with the same concurrency, the hand-written\n" +
			"pipeline (per step: consume, KV get, KV create, publish the next step with Nats-Msg-Id, ack)\n" +
			"and the raw chain (consume, publish next, ack), and prints jetflow's ratio to each.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case runs < 1:
				return usageErr(errors.New("--runs must be at least 1"))
			case steps < 1 || steps > 1000:
				return usageErr(errors.New("--steps: use 1 to 1000"))
			case concurrency < 1:
				return usageErr(errors.New("--concurrency must be at least 1"))
			case payload < 0 || payload > checkpoint.DefaultInlineLimit:
				return usageErr(fmt.Errorf("--payload: use 0 to %d bytes (the inline input limit)", checkpoint.DefaultInlineLimit))
			case replicas < 1 || replicas > 5:
				return usageErr(errors.New("--replicas: use 1 to 5 (3 on a cluster)"))
			}
			ctx := cmd.Context()
			target, dial, stop, err := a.benchTarget(cmd)
			if err != nil {
				return err
			}
			defer stop()
			names, err := benchNames()
			if err != nil {
				return failedErr(err)
			}
			rep := benchReport{Runs: runs, StepsPerRun: steps, Concurrency: concurrency, PayloadBytes: payload, Replicas: replicas, NATS: target}
			if !a.jsonOut {
				fmt.Fprintf(a.stdout, "jetflow bench: %d runs × %d noop steps, concurrency %d, payload %d B, %s NATS (R%d, file storage)\n",
					runs, steps, concurrency, payload, target, replicas)
			}
			if err := a.benchEngine(ctx, dial, names, &rep); err != nil {
				return err
			}
			if baseline {
				for _, raw := range []bool{false, true} {
					if err := a.benchPipeline(ctx, dial, names, raw, &rep); err != nil {
						return err
					}
				}
			}
			if a.jsonOut {
				return a.printJSON(rep)
			}
			printBench(a.stdout, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&runs, "runs", benchjs.DefaultRuns, "runs to start")
	f.IntVar(&steps, "steps", benchjs.DefaultSteps, "noop nodes in the linear workflow")
	f.IntVar(&concurrency, "concurrency", benchjs.DefaultConcurrency, "the worker's concurrency (steps run at once)")
	f.IntVar(&payload, "payload", 0, "bytes of run input, carried by every step")
	f.IntVar(&replicas, "replicas", 1, "replicas of the benchmark's streams and buckets (3 on a cluster)")
	f.BoolVar(&baseline, "baseline", false, "also run the hand-written JetStream pipeline and the raw chain, and print the ratios")
	f.BoolVar(&a.jsonOut, "json", false, "print one JSON object")
	return cmd
}

// benchEngine measures jetflow and fills in rep's figures.
func (a *app) benchEngine(ctx context.Context, dial benchjs.Dialer, names workflow.Names, rep *benchReport) error {
	var published, ended atomic.Int64
	runs := int64(rep.Runs)
	done := a.progress(func() (string, int64, int64) {
		if p := published.Load(); p < runs {
			return "starting", p, runs
		}
		return "jetflow", ended.Load(), runs
	})
	res, err := benchjs.Engine(ctx, dial, benchjs.EngineConfig{
		Names: names, Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency, Payload: rep.PayloadBytes,
		Replicas: rep.Replicas, Published: &published, Ended: &ended, Logger: a.benchLogger(), Version: version,
	})
	done()
	if err != nil {
		return failedErr(fmt.Errorf("bench: %w", err))
	}
	rep.Steps = res.Steps
	rep.Seconds = round(res.Elapsed.Seconds(), 3)
	rep.StepsPerSec, rep.RunsPerSec = round(res.StepsPerSec(), 1), round(res.RunsPerSec(), 1)
	rep.P50ms, rep.P99ms = ms(res.StepLatency.P50), ms(res.StepLatency.P99)
	rep.RunP50ms, rep.RunP99ms = ms(res.RunLatency.P50), ms(res.RunLatency.P99)
	rep.LatencySample = res.Sampled
	return nil
}

// benchPipeline measures the hand-written pipeline (or, raw, the bare chain) and fills in
// its figures and jetflow's ratio to them.
func (a *app) benchPipeline(ctx context.Context, dial benchjs.Dialer, names workflow.Names, raw bool, rep *benchReport) error {
	var ended atomic.Int64
	label := "pipeline"
	if raw {
		label = "raw"
	}
	done := a.progress(func() (string, int64, int64) { return label, ended.Load(), int64(rep.Runs) })
	b, err := benchjs.Pipeline(ctx, dial, benchjs.PipelineConfig{
		Name: benchjs.PipelineName(names, raw), Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency,
		Payload: rep.PayloadBytes, Replicas: rep.Replicas, Raw: raw, Ended: &ended,
	})
	done()
	if err != nil {
		return failedErr(fmt.Errorf("bench %s: %w", label, err))
	}
	fig := &benchFigures{Seconds: round(b.Elapsed.Seconds(), 3), StepsPerSec: round(b.StepsPerSec(), 1), RunsPerSec: round(b.RunsPerSec(), 1)}
	ratio := 0.0
	if fig.StepsPerSec > 0 {
		ratio = round(rep.StepsPerSec/fig.StepsPerSec, 3)
	}
	if raw {
		rep.Raw, rep.RawRatio = fig, ratio
	} else {
		rep.Baseline, rep.Ratio = fig, ratio
	}
	return nil
}

// printBench prints the figures for people.
func printBench(w io.Writer, r benchReport) {
	fmt.Fprintf(w, "  jetflow    %d steps in %.3f s: %.0f steps/s, %.0f runs/s\n", r.Steps, r.Seconds, r.StepsPerSec, r.RunsPerSec)
	fmt.Fprintf(w, "             step latency p50 %s, p99 %s (ready → result, queueing included; %d node states)\n", fmtMs(r.P50ms), fmtMs(r.P99ms), r.LatencySample)
	fmt.Fprintf(w, "             run latency  p50 %s, p99 %s (worker start → run end; every run was queued first)\n", fmtMs(r.RunP50ms), fmtMs(r.RunP99ms))
	if r.Baseline != nil {
		fmt.Fprintf(w, "  pipeline   %d steps in %.3f s: %.0f steps/s (by hand: consume, KV get, KV create, publish next, ack)\n", r.Steps, r.Baseline.Seconds, r.Baseline.StepsPerSec)
	}
	if r.Raw != nil {
		fmt.Fprintf(w, "  raw chain  %d steps in %.3f s: %.0f steps/s (consume, publish next, ack)\n", r.Steps, r.Raw.Seconds, r.Raw.StepsPerSec)
	}
	if r.Baseline != nil && r.Raw != nil {
		fmt.Fprintf(w, "  jetflow / pipeline = %.2f×, jetflow / raw chain = %.2f×\n", r.Ratio, r.RawRatio)
	}
}

// benchTarget returns the server to measure, as shown to the user, and how to connect to it:
// the one --nats (or NATS_URL) names, or else an embedded server in a temporary directory
// that stop shuts down and removes.
func (a *app) benchTarget(cmd *cobra.Command) (target string, dial benchjs.Dialer, stop func(), err error) {
	if f := cmd.Flag("nats"); (f != nil && f.Changed) || os.Getenv("NATS_URL") != "" {
		dial = func(name string) (*nats.Conn, error) {
			opts, err := a.natsOptions(name, false)
			if err != nil {
				return nil, err
			}
			nc, err := nats.Connect(a.natsURL, opts...)
			if err != nil {
				return nil, natsErr(a.natsURL, err)
			}
			return nc, nil
		}
		return redactURL(a.natsURL), dial, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "jetflow-bench-")
	if err != nil {
		return "", nil, nil, failedErr(fmt.Errorf("temporary directory: %w", err))
	}
	srv, err := embedded.Start(embedded.Options{StoreDir: dir, Port: -1})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, nil, failedErr(err)
	}
	stop = func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
	addr := srv.ClientURL()
	dial = func(name string) (*nats.Conn, error) {
		return nats.Connect(addr, nats.Name(name), nats.MaxReconnects(2))
	}
	return "embedded", dial, stop, nil
}

// benchNames returns a fresh random prefix.
func benchNames() (workflow.Names, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return workflow.Names{}, err
	}
	return workflow.NewNames("bench_" + hex.EncodeToString(b[:]))
}

// benchLogger shows the bench worker's warnings only, unless --verbose.
func (a *app) benchLogger() *slog.Logger {
	if a.verbose {
		return a.logger()
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// progress draws a progress bar on stderr, when stderr is a terminal, until the returned
// func is called. state returns the phase, how far it got, and its total.
func (a *app) progress(state func() (string, int64, int64)) func() {
	f, ok := a.stderr.(*os.File)
	if !ok || !isTerminal(f) {
		return func() {}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			drawProgress(f, state, time.Since(start))
			select {
			case <-stop:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-stopped }
}

func drawProgress(w io.Writer, state func() (string, int64, int64), elapsed time.Duration) {
	const width = 30
	label, n, total := state()
	filled := 0
	if total > 0 {
		filled = int(min(n, total) * width / total)
	}
	fmt.Fprintf(w, "\r\033[K%-9s [%s%s] %d/%d runs  %.1fs", label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), n, total, elapsed.Seconds())
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// redactURL drops credentials from a server list before it is printed.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

// fmtMs formats a latency in milliseconds with a precision that suits its size.
func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f ms", v)
	case v < 100:
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}
