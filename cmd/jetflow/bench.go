package main

import (
	"cmp"
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
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/bench"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/workflow"
)

// benchReport is what `jetflow bench --json` prints. Its top-level figures are jetflow's (with
// --pairs above 1, those of the run with the median throughput).
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
	CPUPerStepUs  float64 `json:"cpu_us_per_step"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	LatencySample int     `json:"latency_sample"`
	RunP50ms      float64 `json:"run_p50_ms"`
	RunP99ms      float64 `json:"run_p99_ms"`
	// Pairs is how many times jetflow and each baseline ran, in turn.
	Pairs int `json:"pairs"`
	// Jetflow has the figures of each of jetflow's runs, in order.
	Jetflow []benchFigures `json:"jetflow"`
	// Baselines are the hand-written programs jetflow is compared with (--baseline).
	Baselines []*benchBaseline `json:"baselines,omitempty"`
	// Baseline, Ratio, Raw and RawRatio repeat the hand loop's and the raw chain's medians.
	Baseline *benchFigures `json:"baseline,omitempty"`
	Ratio    float64       `json:"ratio,omitempty"`
	Raw      *benchFigures `json:"raw,omitempty"`
	RawRatio float64       `json:"raw_ratio,omitempty"`
	// Map is the for_each run of --map, against the linear runs of the same pairs.
	Map *benchMap `json:"map,omitempty"`
}

// benchMap is what --map measured: runs of one for_each node over Items items, as many
// items in all as the linear runs have steps, timed in turn with them.
type benchMap struct {
	Items int `json:"items_per_run"`
	Runs  int `json:"runs"`
	// ItemsPerSec is each pair's items per second, in order.
	ItemsPerSec []float64 `json:"items_per_sec"`
	// Ratios are each pair's items/s ÷ the linear run's steps/s; Ratio is their median.
	Ratios   []float64 `json:"ratios"`
	Ratio    float64   `json:"ratio"`
	RatioMin float64   `json:"ratio_min"`
	RatioMax float64   `json:"ratio_max"`
}

// benchFigures are the throughput figures of one run.
type benchFigures struct {
	Seconds      float64 `json:"seconds"`
	StepsPerSec  float64 `json:"steps_per_sec"`
	RunsPerSec   float64 `json:"runs_per_sec"`
	CPUPerStepUs float64 `json:"cpu_us_per_step"`
}

// benchBaseline is one baseline's runs and jetflow's ratio to each (jetflow's run of the same
// pair divided by the baseline's).
type benchBaseline struct {
	Name    string         `json:"name"`
	About   string         `json:"about"`
	Skipped string         `json:"skipped,omitempty"`
	Runs    []benchFigures `json:"runs,omitempty"`
	Ratios  []float64      `json:"ratios,omitempty"`
	// Ratio is the median of Ratios; RatioMin and RatioMax their spread.
	Ratio    float64 `json:"ratio,omitempty"`
	RatioMin float64 `json:"ratio_min,omitempty"`
	RatioMax float64 `json:"ratio_max,omitempty"`
	run      func(ctx context.Context, names workflow.Names, ended *atomic.Int64) (bench.Result, error)
}

func (a *app) benchCmd() *cobra.Command {
	var (
		runs, steps, concurrency, payload, replicas, pairs, mapItems int
		baseline, service                                            bool
		watermill, cpuProfile                                        string
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
			"both include the wait behind the rest of the batch: they are latencies under full load.\n" +
			"CPU per step is this process's CPU time over the timed part: the worker, and the server\n" +
			"too when it is the embedded one (give --nats to measure the worker alone).\n\n" +
			"--baseline also runs, on the same server with the same sizes, the programs a user would\n" +
			"otherwise write: the hand loop (per step: consume, KV get, KV create, publish the next step\n" +
			"with Nats-Msg-Id, ack; nats.go's default KV settings, so reads are direct gets), the same\n" +
			"loop with leader reads, a Watermill router chain (watermill-nats, Retry, PoisonQueue and\n" +
			"Recoverer; a child process, see --watermill), and the raw chain (consume, publish next,\n" +
			"ack). jetflow and each of them run in turn --pairs times; the ratios are jetflow's run\n" +
			"divided by the baseline's of the same pair, and their median and spread are printed.\n\n" +
			"--service also runs, in turn with jetflow's, the same workflow with service nodes answered\n" +
			"by a Go micro service (nats.go micro) in this process instead of in-process handlers: its\n" +
			"ratio is the price of a step's network hop to a service.",
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
			case pairs < 1 || pairs > 100:
				return usageErr(errors.New("--pairs: use 1 to 100"))
			case watermill != "" && !baseline:
				return usageErr(errors.New("--watermill needs --baseline"))
			case mapItems < 0 || mapItems > workflow.MaxItems:
				return usageErr(fmt.Errorf("--map: use 1 to %d items", workflow.MaxItems))
			}
			ctx := cmd.Context()
			var profile *os.File
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return usageErr(fmt.Errorf("--cpuprofile: %w", err))
				}
				defer func() { _ = f.Close() }() // on an early return; closed and checked below
				profile = f
			}
			target, url, dial, stop, err := a.benchTarget(cmd)
			if err != nil {
				return err
			}
			defer stop()
			rep := benchReport{Runs: runs, StepsPerRun: steps, Concurrency: concurrency, PayloadBytes: payload, Replicas: replicas, NATS: target, Pairs: pairs}
			var bases []*benchBaseline
			if baseline {
				var cleanup func()
				if bases, cleanup, err = a.benchBaselines(ctx, &rep, url, dial, watermill); err != nil {
					return err
				}
				defer cleanup()
			}
			if service {
				bases = append(bases, a.serviceBaseline(dial, &rep))
			}
			rep.Baselines = bases
			if mapItems > 0 {
				rep.Map = &benchMap{Items: mapItems, Runs: max(1, runs*steps/mapItems)}
			}
			if !a.jsonOut {
				fmt.Fprintf(a.stdout, "jetflow bench: %d runs × %d noop steps, concurrency %d, payload %d B, %s NATS (R%d, file storage)\n",
					runs, steps, concurrency, payload, target, replicas)
				for _, b := range bases {
					if b.Skipped != "" {
						fmt.Fprintf(a.stdout, "  %s: skipped (%s)\n", b.Name, b.Skipped)
					}
				}
			}
			var engines []bench.EngineResult
			for p := range pairs {
				names, err := benchNames()
				if err != nil {
					return failedErr(err)
				}
				// Each pair starts one further along, so no program always runs first.
				order := append([]*benchBaseline{nil}, live(bases)...)
				for k := range order {
					b := order[(k+p)%len(order)]
					if b == nil {
						var w, mw io.Writer
						if profile != nil && p == 0 {
							w = profile
							if rep.Map != nil {
								w, mw = nil, profile // --map: the profile is of the first map run
							}
						}
						res, err := a.benchEngine(ctx, dial, names, &rep, w)
						if err != nil {
							return err
						}
						engines = append(engines, res)
						rep.Jetflow = append(rep.Jetflow, figures(res.Result))
						if rep.Map != nil {
							if err := a.benchMap(ctx, dial, &rep, res, mw); err != nil {
								return err
							}
						}
						continue
					}
					var ended atomic.Int64
					done := a.progress(func() (string, int64, int64) { return b.Name, ended.Load(), int64(runs) })
					res, err := b.run(ctx, names, &ended)
					done()
					if err != nil {
						return failedErr(fmt.Errorf("bench %s: %w", b.Name, err))
					}
					b.Runs = append(b.Runs, figures(res))
				}
				if !a.jsonOut && pairs > 1 {
					printPair(a.stdout, p, rep.Jetflow[p], live(bases))
				}
			}
			if profile != nil {
				if err := profile.Close(); err != nil {
					return failedErr(fmt.Errorf("--cpuprofile: %w", err))
				}
			}
			rep.fill(engines, live(bases))
			if a.jsonOut {
				return a.printJSON(rep)
			}
			printBench(a.stdout, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&runs, "runs", bench.DefaultRuns, "runs to start")
	f.IntVar(&steps, "steps", bench.DefaultSteps, "noop nodes in the linear workflow")
	f.IntVar(&concurrency, "concurrency", bench.DefaultConcurrency, "the worker's concurrency (steps run at once)")
	f.IntVar(&payload, "payload", 0, "bytes of run input, carried by every step")
	f.IntVar(&replicas, "replicas", 1, "replicas of the benchmark's streams and buckets (3 on a cluster)")
	f.IntVar(&pairs, "pairs", 1, "how many times jetflow (and, with --baseline, each baseline) runs, in turn")
	f.BoolVar(&baseline, "baseline", false, "also run the hand-written loops, the Watermill chain and the raw chain, and print jetflow's ratio to each")
	f.BoolVar(&service, "service", false, "also run the workflow with its steps answered by a Go micro service (service nodes) and print jetflow's in-process ratio to it")
	f.StringVar(&watermill, "watermill", "", "the "+bench.WatermillBinary+" executable (default: beside jetflow, in ./bin or on PATH, else built from ./bench/watermill with go)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of jetflow's first timed run (with --map, the first map run) to this file (go tool pprof)")
	f.IntVar(&mapItems, "map", 0, "also time runs of one for_each node over this many items (as many items in all as the linear runs have steps), in turn with the linear runs, and print items/s against steps/s")
	f.BoolVar(&a.jsonOut, "json", false, "print one JSON object")
	cmd.AddCommand(a.benchImpactCmd())
	return cmd
}

// benchBaselines returns the baselines --baseline runs. The Watermill chain is skipped, with
// the reason, when its executable cannot be found or built.
// cleanup removes what it built.
func (a *app) benchBaselines(ctx context.Context, rep *benchReport, url string, dial bench.Dialer, watermill string) (bases []*benchBaseline, cleanup func(), err error) {
	pipeline := func(m bench.Mode) func(context.Context, workflow.Names, *atomic.Int64) (bench.Result, error) {
		return func(ctx context.Context, names workflow.Names, ended *atomic.Int64) (bench.Result, error) {
			return bench.Pipeline(ctx, dial, bench.PipelineConfig{
				Name: bench.PipelineName(names, m), Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency,
				Payload: rep.PayloadBytes, Replicas: rep.Replicas, Mode: m, Ended: ended,
			})
		}
	}
	bases = []*benchBaseline{
		{Name: bench.HandLoop.String(), About: "consume, KV get, KV create, publish next, ack; nats.go defaults (direct gets)", run: pipeline(bench.HandLoop)},
		{Name: bench.LeaderLoop.String(), About: "the hand loop with leader reads (direct gets off)", run: pipeline(bench.LeaderLoop)},
		{Name: "watermill", About: "Watermill router chain: watermill-nats, Retry, PoisonQueue, Recoverer; no checkpoint"},
		{Name: bench.RawChain.String(), About: "consume, publish next, ack; no KV", run: pipeline(bench.RawChain)},
	}
	wm := bases[2]
	dir, err := os.MkdirTemp("", "jetflow-bench-watermill-")
	if err != nil {
		return nil, nil, failedErr(err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	bin, how, err := bench.FindWatermill(ctx, watermill, dir)
	switch {
	case err != nil && watermill != "":
		cleanup()
		return nil, nil, usageErr(err)
	case err != nil:
		wm.Skipped = err.Error()
	default:
		wm.About += " (" + how + ")"
		env := a.childNATSEnv(url)
		wm.run = func(ctx context.Context, names workflow.Names, _ *atomic.Int64) (bench.Result, error) {
			return bench.Watermill(ctx, bench.WatermillConfig{
				Bin: bin, Env: env, Prefix: strings.ReplaceAll(names.Prefix(), "-", "_") + "_wm",
				Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency, Payload: rep.PayloadBytes,
				Replicas: rep.Replicas, Stall: bench.DefaultStall,
			})
		}
	}
	return bases, cleanup, nil
}

// serviceBaseline is --service: jetflow's own run with every step a service node answered by
// a Go micro service in this process.
func (a *app) serviceBaseline(dial bench.Dialer, rep *benchReport) *benchBaseline {
	return &benchBaseline{
		Name: "service", About: "the same workflow, each step a service node answered by a Go micro service (nats.go micro) in this process",
		run: func(ctx context.Context, names workflow.Names, ended *atomic.Int64) (bench.Result, error) {
			restore := workerGC() // jetflow's worker, as in jetflow's own run
			defer restore()
			res, err := bench.Engine(ctx, dial, bench.EngineConfig{
				Names: names, Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency, Payload: rep.PayloadBytes,
				Replicas: rep.Replicas, Ended: ended, Logger: a.benchLogger(), Version: version, Service: true,
			})
			return res.Result, err
		},
	}
}

// childNATSEnv is the environment of a child that connects as this command does: the
// server's URL and the credentials given by flag or environment, never on its command line.
func (a *app) childNATSEnv(url string) []string {
	vars := map[string]string{
		"NATS_URL": url, "NATS_CREDS": a.creds, "NATS_NKEY": a.nkey, "NATS_USER": a.user, "NATS_PASSWORD": a.password,
		"NATS_TOKEN": a.token, "NATS_CA": a.tlsCA, "NATS_CERT": a.tlsCert, "NATS_KEY": a.tlsKey,
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "NATS_") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// live is the baselines that run.
func live(bases []*benchBaseline) []*benchBaseline {
	var out []*benchBaseline
	for _, b := range bases {
		if b.run != nil {
			out = append(out, b)
		}
	}
	return out
}

// fill sets the report's jetflow figures from its median run and each baseline's ratios.
func (r *benchReport) fill(engines []bench.EngineResult, bases []*benchBaseline) {
	med := slices.Clone(engines)
	slices.SortFunc(med, func(x, y bench.EngineResult) int { return cmp.Compare(x.StepsPerSec(), y.StepsPerSec()) })
	res := med[len(med)/2]
	r.Steps = res.Steps
	f := figures(res.Result)
	r.Seconds, r.StepsPerSec, r.RunsPerSec, r.CPUPerStepUs = f.Seconds, f.StepsPerSec, f.RunsPerSec, f.CPUPerStepUs
	r.P50ms, r.P99ms = ms(res.StepLatency.P50), ms(res.StepLatency.P99)
	r.RunP50ms, r.RunP99ms = ms(res.RunLatency.P50), ms(res.RunLatency.P99)
	r.LatencySample = res.Sampled
	for _, b := range bases {
		for i, run := range b.Runs {
			if run.StepsPerSec > 0 {
				b.Ratios = append(b.Ratios, round(r.Jetflow[i].StepsPerSec/run.StepsPerSec, 3))
			}
		}
		if len(b.Ratios) == 0 {
			continue
		}
		b.Ratio, b.RatioMin, b.RatioMax = median(b.Ratios), slices.Min(b.Ratios), slices.Max(b.Ratios)
		medRun := slices.Clone(b.Runs)
		slices.SortFunc(medRun, func(x, y benchFigures) int { return cmp.Compare(x.StepsPerSec, y.StepsPerSec) })
		switch b.Name {
		case bench.HandLoop.String():
			r.Baseline, r.Ratio = &medRun[len(medRun)/2], b.Ratio
		case bench.RawChain.String():
			r.Raw, r.RawRatio = &medRun[len(medRun)/2], b.Ratio
		}
	}
}

func figures(res bench.Result) benchFigures {
	return benchFigures{
		Seconds: round(res.Elapsed.Seconds(), 3), StepsPerSec: round(res.StepsPerSec(), 1), RunsPerSec: round(res.RunsPerSec(), 1),
		CPUPerStepUs: round(float64(res.CPUPerStep())/float64(time.Microsecond), 1),
	}
}

// median of xs (not empty), halfway between the middle two of an even count.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return round((s[n/2-1]+s[n/2])/2, 3)
	}
	return s[len(s)/2]
}

// benchEngine measures jetflow once.
func (a *app) benchEngine(ctx context.Context, dial bench.Dialer, names workflow.Names, rep *benchReport, profile io.Writer) (bench.EngineResult, error) {
	var published, ended atomic.Int64
	runs := int64(rep.Runs)
	done := a.progress(func() (string, int64, int64) {
		if p := published.Load(); p < runs {
			return "starting", p, runs
		}
		return "jetflow", ended.Load(), runs
	})
	// The worker's GC target (as `jetflow worker` runs), for jetflow's run only: the
	// baselines run with Go's defaults, as a user's program would.
	restore := workerGC()
	defer restore()
	res, err := bench.Engine(ctx, dial, bench.EngineConfig{
		Names: names, Runs: rep.Runs, Steps: rep.StepsPerRun, Concurrency: rep.Concurrency, Payload: rep.PayloadBytes,
		Replicas: rep.Replicas, Published: &published, Ended: &ended, Logger: a.benchLogger(), Version: version,
		CPUProfile: profile,
	})
	done()
	if err != nil {
		return res, failedErr(fmt.Errorf("bench: %w", err))
	}
	return res, nil
}

// benchMap times the --map run right after a linear run of the same pair and records its
// items/s and its ratio to that run's steps/s.
func (a *app) benchMap(ctx context.Context, dial bench.Dialer, rep *benchReport, linear bench.EngineResult, profile io.Writer) error {
	names, err := benchNames()
	if err != nil {
		return failedErr(err)
	}
	var published, ended atomic.Int64
	m := rep.Map
	runs := int64(m.Runs)
	done := a.progress(func() (string, int64, int64) {
		if p := published.Load(); p < runs {
			return "starting map", p, runs
		}
		return "map", ended.Load(), runs
	})
	restore := workerGC()
	res, err := bench.Engine(ctx, dial, bench.EngineConfig{
		Names: names, Runs: m.Runs, Map: m.Items, Concurrency: rep.Concurrency, Replicas: rep.Replicas,
		Published: &published, Ended: &ended, Logger: a.benchLogger(), Version: version, CPUProfile: profile,
	})
	restore()
	done()
	if err != nil {
		return failedErr(fmt.Errorf("bench --map: %w", err))
	}
	ips := res.StepsPerSec()
	m.ItemsPerSec = append(m.ItemsPerSec, round(ips, 1))
	if lin := linear.StepsPerSec(); lin > 0 {
		m.Ratios = append(m.Ratios, round(ips/lin, 3))
		m.Ratio, m.RatioMin, m.RatioMax = median(m.Ratios), slices.Min(m.Ratios), slices.Max(m.Ratios)
	}
	return nil
}

// printPair prints one pair's throughputs.
func printPair(w io.Writer, p int, jf benchFigures, bases []*benchBaseline) {
	fmt.Fprintf(w, "  pair %2d: jetflow %6.0f steps/s", p+1, jf.StepsPerSec)
	for _, b := range bases {
		r := b.Runs[p]
		fmt.Fprintf(w, " · %s %6.0f (%.2f×)", b.Name, r.StepsPerSec, jf.StepsPerSec/r.StepsPerSec)
	}
	fmt.Fprintln(w)
}

// printBench prints the figures for people.
func printBench(w io.Writer, r benchReport) {
	of := ""
	if r.Pairs > 1 {
		of = fmt.Sprintf(" (the median of %d runs)", r.Pairs)
	}
	fmt.Fprintf(w, "  jetflow    %d steps in %.3f s: %.0f steps/s, %.0f runs/s, %.1f CPU µs/step%s\n", r.Steps, r.Seconds, r.StepsPerSec, r.RunsPerSec, r.CPUPerStepUs, of)
	fmt.Fprintf(w, "             step latency p50 %s, p99 %s (ready → result, queueing included; %d node states)\n", fmtMs(r.P50ms), fmtMs(r.P99ms), r.LatencySample)
	fmt.Fprintf(w, "             run latency  p50 %s, p99 %s (worker start → run end; every run was queued first)\n", fmtMs(r.RunP50ms), fmtMs(r.RunP99ms))
	if m := r.Map; m != nil && len(m.ItemsPerSec) > 0 {
		fmt.Fprintf(w, "  map        %d runs × one for_each node over %d items: %.0f items/s (median); %.2f× the linear steps/s (%.2f–%.2f over %d pairs)\n",
			m.Runs, m.Items, median(m.ItemsPerSec), m.Ratio, m.RatioMin, m.RatioMax, len(m.Ratios))
	}
	for _, b := range r.Baselines {
		if len(b.Runs) == 0 {
			continue
		}
		sps := make([]float64, len(b.Runs))
		cpu := make([]float64, len(b.Runs))
		for i, run := range b.Runs {
			sps[i], cpu[i] = run.StepsPerSec, run.CPUPerStepUs
		}
		fmt.Fprintf(w, "  %-11s %.0f steps/s (%.0f–%.0f), %.1f CPU µs/step: %s\n", b.Name, median(sps), slices.Min(sps), slices.Max(sps), median(cpu), b.About)
	}
	for _, b := range r.Baselines {
		if len(b.Ratios) == 0 {
			continue
		}
		spread := ""
		if len(b.Ratios) > 1 {
			spread = fmt.Sprintf(" (%.2f–%.2f over %d pairs)", b.RatioMin, b.RatioMax, len(b.Ratios))
		}
		fmt.Fprintf(w, "  jetflow / %-11s = %.2f×%s\n", b.Name, b.Ratio, spread)
	}
}

// benchTarget returns the server to measure, as shown to the user, and how to connect to it:
// the one --nats (or NATS_URL) names, or else an embedded server in a temporary directory
// that stop shuts down and removes.
func (a *app) benchTarget(cmd *cobra.Command) (target, url string, dial bench.Dialer, stop func(), err error) {
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
		return redactURL(a.natsURL), a.natsURL, dial, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "jetflow-bench-")
	if err != nil {
		return "", "", nil, nil, failedErr(fmt.Errorf("temporary directory: %w", err))
	}
	srv, err := embedded.Start(embedded.Options{StoreDir: dir, Port: -1})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", "", nil, nil, failedErr(err)
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
	return "embedded", addr, dial, stop, nil
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
