package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/bench"
)

func (a *app) benchImpactCmd() *cobra.Command {
	var (
		cfg   bench.ImpactConfig
		chart string
	)
	cmd := &cobra.Command{
		Use:   "impact",
		Short: "Measure what resilience is worth: the same AI workflows with no resilience, with retries only, and on jetflow, against flaky model APIs",
		Long: "impact runs --runs four-step workflows (fetch → summarize (llm) → classify (llm) → store),\n" +
			"arriving evenly over --over, against two local OpenAI-compatible servers that fail\n" +
			"--fail-rate of their calls; the primary also answers 429 bursts (Retry-After: 1, one\n" +
			"second in ten) and is down for --outage from --outage-at. Three ways:\n" +
			"  no resilience  a goroutine a run calling the primary with openai-go, no retries;\n" +
			"                 a run fails on its first error\n" +
			"  retries only   the same, with openai-go's default retries (2, with backoff)\n" +
			"  jetflow        an embedded NATS server and two `jetflow worker` processes with both\n" +
			"                 providers (the primary behind a breaker, the secondary its fallback);\n" +
			"                 one worker is killed (SIGKILL) at half time and started again 5 s later\n" +
			"It prints one table and writes --chart, an SVG of jetflow's calls per second per provider.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Runs < 1 || cfg.Over <= 0 || cfg.OutageFor < 0 || cfg.OutageAt < 0 || !(cfg.FailRate >= 0 && cfg.FailRate < 1) {
				return usageErr(errors.New("impact: --runs, --over must be positive, --fail-rate 0 to 1"))
			}
			self, err := os.Executable()
			if err != nil {
				return failedErr(fmt.Errorf("impact: cannot find the jetflow binary to start workers: %w", err))
			}
			cfg.StartWorker = func(ctx context.Context, url, prefix, providers, log string) (*os.Process, error) {
				f, err := os.Create(log)
				if err != nil {
					return nil, err
				}
				c := exec.Command(self, "worker", "--nats", url, "--prefix", prefix, "--providers", providers,
					"--concurrency", "64", "--drain-timeout", "5s")
				c.Stdout, c.Stderr = f, f
				c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
				if err := c.Start(); err != nil {
					_ = f.Close()
					return nil, err
				}
				go func() { _ = c.Wait(); _ = f.Close() }()
				return c.Process, nil
			}
			cfg.Logf = func(format string, args ...any) { fmt.Fprintf(a.stderr, format+"\n", args...) }
			res, err := bench.Impact(cmd.Context(), cfg)
			if err != nil {
				return failedErr(err)
			}
			if chart != "" {
				if err := os.WriteFile(chart, []byte(res.SVG()), 0o644); err != nil {
					return failedErr(fmt.Errorf("--chart: %w", err))
				}
			}
			if a.jsonOut {
				return a.printJSON(res)
			}
			fmt.Fprint(a.stdout, res.Table())
			if chart != "" {
				fmt.Fprintf(a.stdout, "\nchart: %s\n", chart)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Runs, "runs", 500, "workflows to run, each way")
	f.DurationVar(&cfg.Over, "over", time.Minute, "the runs arrive evenly over this long")
	f.Float64Var(&cfg.FailRate, "fail-rate", 0.17, "share of calls both providers fail at random (500)")
	f.DurationVar(&cfg.OutageAt, "outage-at", 15*time.Second, "when the primary goes down")
	f.DurationVar(&cfg.OutageFor, "outage", 30*time.Second, "how long the primary is down (503)")
	f.StringVar(&chart, "chart", "impact.svg", "write the chart of jetflow's calls per second per provider here (empty: none)")
	f.BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}
