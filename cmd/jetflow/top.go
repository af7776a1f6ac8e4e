package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/metrics"
)

// topWindow is how far back `jetflow top` measures finished steps.
const topWindow = 30 * time.Second

func (a *app) topCmd() *cobra.Command {
	var (
		once     bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live terminal view: steps/s, latency, in flight, backlog per node type, breakers, DLQ depth",
		Long: "top redraws every second what the whole installation is doing, read from NATS: steps\n" +
			"finished per second and their p50/p99 latency over the last 30 s (from the node states\n" +
			"written), deliveries per second (from the consumers), steps in flight (from the workers'\n" +
			"presence), each node type's backlog, open breakers, and the DLQ depth. --once prints one\n" +
			"snapshot and exits (for scripts; with --json, as JSON).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usageErr(errors.New("--interval must be at least 100ms"))
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx, "top", !once, false)
			if err != nil {
				return err
			}
			defer c.Close()
			act := metrics.NewActivity(c.js, c.names, metrics.ActivityConfig{Window: topWindow})
			actCtx, stopAct := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { _ = act.Run(actCtx) })
			defer func() { stopAct(); wg.Wait() }()

			if once {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_ = act.Sync(sctx) // without the history, the snapshot still shows the rest
				cancel()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				o := metrics.ReadOverview(rctx, c.js, c.names, act)
				cancel()
				if len(o.Errors) > 0 && len(o.Backlog) == 0 {
					return failedErr(fmt.Errorf("cannot read the installation (%s): is it set up (`jetflow setup`)?", strings.Join(o.Errors, "; ")))
				}
				if a.jsonOut {
					return a.printJSON(o)
				}
				drawTop(a.stdout, c.names.Prefix(), o, -1)
				return nil
			}

			fmt.Fprint(a.stdout, "\x1b[?25l") // hide the cursor
			defer fmt.Fprint(a.stdout, "\x1b[?25h\n")
			t := time.NewTicker(interval)
			defer t.Stop()
			var last *metrics.Overview
			for {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				o := metrics.ReadOverview(rctx, c.js, c.names, act)
				cancel()
				if ctx.Err() != nil {
					return nil
				}
				var frame bytes.Buffer
				frame.WriteString("\x1b[H\x1b[2J") // home, clear the screen
				drawTop(&frame, c.names.Prefix(), o, deliveryRate(last, o))
				_, _ = frame.WriteTo(a.stdout)
				last = o
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&once, "once", false, "print one snapshot and exit")
	f.DurationVar(&interval, "interval", time.Second, "time between redraws")
	f.BoolVar(&a.jsonOut, "json", false, "with --once, print the snapshot as JSON")
	return cmd
}

// deliveryRate is the consumers' deliveries per second between two snapshots (-1: unknown).
func deliveryRate(prev, cur *metrics.Overview) float64 {
	if prev == nil || len(prev.Errors) > 0 || len(cur.Errors) > 0 {
		return -1
	}
	dt := cur.At.Sub(prev.At).Seconds()
	if dt <= 0 {
		return -1
	}
	var before, after uint64
	for _, b := range prev.Backlog {
		before += b.Delivered
	}
	for _, b := range cur.Backlog {
		after += b.Delivered
	}
	if after < before {
		return -1 // a consumer was recreated
	}
	return float64(after-before) / dt
}

// drawTop writes one screen of `jetflow top`; deliveries < 0 leaves the delivery rate out.
func drawTop(w io.Writer, prefix string, o *metrics.Overview, deliveries float64) {
	act := o.Activity
	fmt.Fprintf(w, "jetflow top · prefix %s · %s\n\n", prefix, o.At.Local().Format("2006-01-02 15:04:05"))
	tw := table(w)
	rate := fmt.Sprintf("%.1f steps/s finished (last %s)", act.StepsPerSec, act.Window)
	if deliveries >= 0 {
		rate += fmt.Sprintf("   %.1f deliveries/s", deliveries)
	}
	fmt.Fprintf(tw, "THROUGHPUT\t%s\n", rate)
	fmt.Fprintf(tw, "LATENCY\tp50 %s   p99 %s\n", durText(act.P50), durText(act.P99))
	fmt.Fprintf(tw, "FAILURES\t%.1f%%   (%d failed, %d ok)\n", 100*act.FailureRate, act.Failed, act.Succeeded)
	fmt.Fprintf(tw, "IN FLIGHT\t%d on %d %s\n", o.InFlight, len(o.Workers), plural(len(o.Workers), "worker", "workers"))
	fmt.Fprintf(tw, "DLQ\t%d %s\n", o.DLQDepth, plural(int(o.DLQDepth), "entry", "entries"))
	if act.Skipped+act.Items+act.Subflows > 0 {
		fmt.Fprintf(tw, "CONTROL FLOW\t%d map %s done   %d %s skipped   %d %s (ended or waiting)\n", act.Items, plural(act.Items, "item", "items"),
			act.Skipped, plural(act.Skipped, "node", "nodes"), act.Subflows, plural(act.Subflows, "subflow", "subflows"))
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	tw = table(w)
	fmt.Fprintln(tw, "TYPE\tWAITING\tIN DELIVERY\tSTATUS")
	for _, b := range o.Backlog {
		status := ""
		if b.Paused {
			status = "paused"
			if b.PauseUntil != nil {
				status += " until " + b.PauseUntil.Local().Format("15:04:05")
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", b.Type, b.Pending, b.AckPending, status)
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	if len(o.Breakers) == 0 {
		fmt.Fprintln(w, "BREAKERS  all closed")
	} else {
		tw = table(w)
		fmt.Fprintln(tw, "BREAKER\tSTATE\tUNTIL\tREASON\tBY")
		for _, b := range o.Breakers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Key, b.State, b.OpenUntil.Local().Format("15:04:05"), b.Reason, b.By)
		}
		_ = tw.Flush()
	}
	for _, e := range o.Errors {
		fmt.Fprintf(w, "\n! %s", e)
	}
	if len(o.Errors) > 0 {
		fmt.Fprintln(w)
	}
}

// durText formats a latency briefly ("-" for none).
func durText(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Truncate(time.Second).String()
}
