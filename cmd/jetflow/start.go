package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

func (a *app) startCmd() *cobra.Command {
	var (
		input, id string
		wait      bool
		timeout   time.Duration
		maxInput  int
	)
	cmd := &cobra.Command{
		Use:   "start WORKFLOW",
		Short: "Start a run and print its ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !workflow.ValidName(name) {
				return usageErr(fmt.Errorf("workflow name %q: use letters, digits, '_' and '-' only", workflow.OneLine(name, 80)))
			}
			if id != "" && !workflow.ValidRunID(id) {
				return usageErr(fmt.Errorf("--id %q: use 1 to 64 letters, digits, '_' or '-'", workflow.OneLine(id, 80)))
			}
			if timeout < 0 {
				return usageErr(errors.New("--timeout must be positive"))
			}
			raw, err := a.readArg("--input", input)
			if err != nil {
				return err
			}
			in, err := producer.CheckInput(raw, maxInput)
			if err != nil {
				return usageErr(fmt.Errorf("--input: %w", err))
			}
			c, err := a.connect(cmd.Context(), "start", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			tp, shutdown, err := tracing.Setup(cmd.Context(), "jetflow-cli", version)
			if err != nil {
				return failedErr(err)
			}
			defer func() { _ = shutdown(context.WithoutCancel(cmd.Context())) }()
			pcfg := producer.Config{Names: c.names, MaxInputBytes: maxInput}
			if tp != nil {
				pcfg.Tracer = tp
			}
			p := producer.New(c.js, c.store, pcfg)
			runID, err := p.Start(cmd.Context(), name, in, producer.StartOptions{ID: id})
			switch {
			case errors.Is(err, producer.ErrUnknownWorkflow):
				return usageErr(fmt.Errorf("unknown workflow %q: apply it with `jetflow workflows apply FILE` (see `jetflow workflows ls`)", name))
			case errors.Is(err, producer.ErrBadInput):
				return usageErr(err)
			case err != nil:
				return failedErr(err)
			}
			a.warnUnservedNamed(cmd.Context(), c, name)
			if !wait {
				a.waitRecorded(cmd.Context(), c, runID)
				if a.jsonOut {
					return a.printJSON(map[string]string{"id": runID, "status": checkpoint.RunRunning})
				}
				fmt.Fprintln(a.stdout, runID)
				return nil
			}
			if !a.jsonOut {
				fmt.Fprintln(a.stdout, runID)
			}
			return a.waitRun(cmd.Context(), c, runID, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "run input: JSON, @file or @- (standard input)")
	f.StringVar(&id, "id", "", "run ID (default a new UUIDv7); the same ID with the same input starts one run")
	f.BoolVar(&wait, "wait", false, "wait for the run to end; exit 0 completed, 1 failed or cancelled, 124 on --timeout")
	f.DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (default: wait forever)")
	f.IntVar(&maxInput, "max-input", producer.DefaultMaxInputBytes, "largest input accepted, in bytes")
	f.BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

// recordWait bounds how long `start` waits for a worker to record the run it started.
const recordWait = 5 * time.Second

// idleRecordWait is how long it waits when no worker is live.
const idleRecordWait = 2 * time.Second

// waitRecorded waits, for at most recordWait, until a worker has taken the run's start
// request and written its record, so that `runs get` right after `start` finds the run. It
// says on stderr when no worker is live, or none took the request in time: the request
// waits in the steps stream, and the run starts when a worker takes it.
func (a *app) waitRecorded(ctx context.Context, c *conn, runID string) {
	wait := recordWait
	served, err := consumer.ServedTypes(ctx, c.js, c.names)
	idle := err == nil && len(served) == 0
	if idle {
		wait = idleRecordWait // a worker may be starting up
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := c.store.WaitRun(wctx, runID); err == nil || ctx.Err() != nil {
		return
	}
	if idle {
		fmt.Fprintf(a.stderr, "warning: no live worker: run %s starts when a worker takes its start request (see `jetflow workers ls`)\n", runID)
		return
	}
	fmt.Fprintf(a.stderr, "warning: run %s: no worker took its start request within %s; it starts when one does\n", runID, wait)
}

// waitRun waits for a run to end and prints how it ended; the exit code follows the status.
func (a *app) waitRun(ctx context.Context, c *conn, runID string, timeout time.Duration) error {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	end, err := c.store.WaitEnd(wctx, runID)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return &exitError{code: exitTimeout, err: fmt.Errorf("run %s still running after %s: see `jetflow runs get %s`", runID, timeout, runID)}
		}
		return failedErr(err)
	}
	if a.jsonOut {
		view, err := c.store.Describe(ctx, runID)
		if err != nil {
			return failedErr(err)
		}
		if err := a.printJSON(view); err != nil {
			return err
		}
	} else {
		line := end.Status
		if end.Reason != "" {
			line += ": " + end.Reason
		}
		fmt.Fprintln(a.stdout, line)
	}
	if end.Status != checkpoint.EndCompleted {
		return &exitError{code: exitFailed, silent: true}
	}
	return nil
}
