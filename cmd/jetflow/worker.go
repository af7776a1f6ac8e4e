package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/tracing"
)

func (a *app) workerCmd() *cobra.Command {
	var (
		types        string
		concurrency  int
		drainTimeout time.Duration
		workflowsDir string
		allowEnv     string
		retention    time.Duration
		maxPayload   int
		hf           httpFlags
		lf           llmFlags
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run steps of the built-in node types until SIGTERM or SIGINT, then drain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer workerGC()()
			if concurrency < 1 {
				return usageErr(errors.New("--concurrency must be at least 1"))
			}
			if drainTimeout < 0 {
				return usageErr(errors.New("--drain-timeout must be positive"))
			}
			if maxPayload < 1 {
				return usageErr(errors.New("--max-payload must be at least 1 byte"))
			}
			if err := hf.health.validate(); err != nil {
				return err
			}
			if err := lf.load(); err != nil {
				return err
			}
			var typeList []string
			if types != "" {
				typeList = strings.Split(types, ",")
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx, "worker", true, true)
			if err != nil {
				return err
			}
			defer c.Close()
			if workflowsDir != "" {
				if err := a.applyDir(ctx, c, workflowsDir); err != nil {
					return err
				}
			}
			if retention < 0 {
				return usageErr(errors.New("--retention must be positive"))
			}
			cfg := consumer.Config{Types: typeList, Concurrency: concurrency, DrainTimeout: drainTimeout, Retention: retention, MaxPayload: maxPayload}
			if allowEnv != "" {
				cfg.AllowEnv = strings.Split(allowEnv, ",")
			}
			o, err := a.newObs(c, hf, concurrency, func() bool { return ctx.Err() != nil }, 0)
			if err != nil {
				return err
			}
			return a.runWorker(ctx, c, cfg, o, &lf)
		},
	}
	f := cmd.Flags()
	f.StringVar(&types, "types", "", "node types to run, comma-separated (default: all built-in types)")
	f.IntVar(&concurrency, "concurrency", consumer.DefaultConcurrency, "steps of each node type run at once")
	f.DurationVar(&drainTimeout, "drain-timeout", consumer.DefaultDrainTimeout, "on shutdown, how long running steps may finish")
	f.StringVar(&workflowsDir, "workflows", "", "apply every definition in this directory at start")
	f.IntVar(&maxPayload, "max-payload", checkpoint.DefaultMaxPayload, "largest node input or output, in bytes (over 256 KiB they travel as blobs)")
	f.DurationVar(&retention, "retention", checkpoint.DefaultRetention, "how long a run's keys are kept after it ends (the reaper purges them; runs with DLQ entries are kept)")
	hf.register(cmd, "")
	lf.register(cmd)
	f.StringVar(&allowEnv, "allow-env", "", "environment variables ${{ env.NAME }} expressions may read, comma-separated (e.g. API_KEY)")
	return cmd
}

// runWorker runs a worker with the built-in node types until ctx ends.
func (a *app) runWorker(ctx context.Context, c *conn, cfg consumer.Config, o *obs, lf *llmFlags) error {
	cfg.Names = c.names
	cfg.Observer = o.observer()
	cfg.Logger = a.logger()
	cfg.Version = version
	tp, shutdown, err := tracing.Setup(ctx, "jetflow-worker", version)
	if err != nil {
		return failedErr(err)
	}
	defer func() { _ = shutdown(context.WithoutCancel(ctx)) }()
	if tp != nil {
		cfg.Tracer = tp
	}
	w, err := consumer.New(c.js, c.store, cfg)
	if err != nil {
		return usageErr(err)
	}
	nodes.Register(w)
	if err := a.registerLLM(ctx, c, w, lf, o); err != nil {
		return err
	}
	o.attach(w)
	defer o.start()() // the server outlives the drain: /readyz says 503 while draining
	if err := w.Run(ctx); err != nil {
		return failedErr(err)
	}
	return nil
}

// applyDir applies every definition in dir.
func (a *app) applyDir(ctx context.Context, c *conn, dir string) error {
	files, err := definitionFiles(dir)
	if err != nil {
		return usageErr(fmt.Errorf("--workflows: %w", err))
	}
	if len(files) == 0 {
		return nil
	}
	wfs, err := parseFiles(files)
	if err != nil {
		return err
	}
	for _, w := range wfs {
		if _, _, err := a.applyWorkflow(ctx, c, w, false); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "workflow %s applied from %s\n", w.Name, dir)
	}
	return nil
}
