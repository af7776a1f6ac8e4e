package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/metrics"
	"github.com/jetflow-dev/jetflow/setup"
)

// devPort is the port `jetflow dev` takes when it is free.
const devPort = 4222

func (a *app) devCmd() *cobra.Command {
	var (
		dataDir, workflowsDir string
		port, concurrency     int
		retention             time.Duration
		maxPayload            int
		hf                    httpFlags
		lf                    llmFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything on this machine: embedded NATS, setup, your workflows, a worker",
		Long: "dev starts an embedded nats-server with JetStream (loopback only, data in --data), sets\n" +
			"up streams and buckets, applies every workflow in --workflows, and runs a worker with the\n" +
			"built-in node types until Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer workerGC()()
			if err := hf.health.validate(); err != nil {
				return err
			}
			if concurrency < 1 {
				return usageErr(errors.New("--concurrency must be at least 1"))
			}
			if retention <= 0 {
				return usageErr(errors.New("--retention must be positive"))
			}
			if maxPayload < 1 {
				return usageErr(errors.New("--max-payload must be at least 1 byte"))
			}
			if err := lf.load(); err != nil {
				return err
			}
			ctx := cmd.Context()
			names, err := a.names()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("workflows") {
				if fi, err := os.Stat("examples"); err == nil && fi.IsDir() {
					workflowsDir = "examples"
				}
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return failedErr(fmt.Errorf("--data %s: %w", dataDir, err))
			}
			abs, _ := filepath.Abs(dataDir)
			if port == 0 {
				port = -1
				if embedded.PortFree(devPort) {
					port = devPort
				}
			}
			srv, err := embedded.Start(embedded.Options{StoreDir: abs, Port: port})
			if err != nil {
				return failedErr(err)
			}
			defer func() {
				srv.Shutdown()
				srv.WaitForShutdown()
			}()
			url := srv.ClientURL()
			a.natsURL = url
			nc, err := nats.Connect(url, nats.Name("jetflow dev"), nats.MaxReconnects(-1))
			if err != nil {
				return failedErr(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return failedErr(err)
			}
			if _, err := setup.Run(ctx, js, setup.Config{Names: names}); err != nil {
				return failedErr(err)
			}
			store, err := checkpoint.Open(ctx, js, names)
			if err != nil {
				return failedErr(err)
			}
			c := &conn{nc: nc, js: js, store: store, names: names}
			var applied []string
			if workflowsDir != "" {
				wfs, err := parseFiles([]string{workflowsDir})
				if err != nil {
					return err
				}
				for _, w := range wfs {
					if _, _, err := a.applyWorkflow(ctx, c, w, true); err != nil {
						return err
					}
					applied = append(applied, w.Name)
				}
				sort.Strings(applied)
			}
			natsFlag := ""
			if port != devPort {
				natsFlag = " --nats " + url
			}
			o, err := a.newObs(c, hf, concurrency, func() bool { return ctx.Err() != nil }, 20)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "NATS: %s\n", url)
			if u := o.url(); u != "" {
				fmt.Fprintf(a.stdout, "Dashboard: %s\n", u)
			}
			fmt.Fprintf(a.stdout, "Data: %s\n", abs)
			if len(applied) > 0 {
				fmt.Fprintf(a.stdout, "Workflows: %v (from %s)\n", applied, workflowsDir)
			}
			example := "WORKFLOW"
			if len(applied) > 0 {
				example = applied[0]
			}
			if slices.Contains(applied, "diamond") {
				example = "diamond" // the examples' showcase
			}
			fmt.Fprintf(a.stdout, "Start a run from another terminal:\n  go run ./cmd/jetflow start %s --input '{}' --wait%s\n", example, natsFlag)
			fmt.Fprintf(a.stdout, "Press Ctrl-C to stop.\n")
			err = a.runWorker(ctx, c, consumer.Config{Concurrency: concurrency, DrainTimeout: 10 * time.Second, Retention: retention, MaxPayload: maxPayload}, o, &lf)
			fmt.Fprintln(a.stdout, "Stopped.")
			if err != nil && !errors.Is(err, ctx.Err()) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", ".jetflow", "JetStream data directory")
	f.StringVar(&workflowsDir, "workflows", "", "apply every definition in this directory (default ./examples when present)")
	f.IntVar(&port, "port", 0, "NATS port (default 4222, or a free one if 4222 is taken)")
	f.IntVar(&concurrency, "concurrency", consumer.DefaultConcurrency, "steps of each node type run at once")
	f.DurationVar(&retention, "retention", checkpoint.DefaultRetention, "how long a run's keys are kept after it ends (the reaper purges them; runs with DLQ entries are kept)")
	f.IntVar(&maxPayload, "max-payload", checkpoint.DefaultMaxPayload, "largest node input or output, in bytes (over 256 KiB they travel as blobs)")
	hf.register(cmd, metrics.DefaultAddr)
	lf.register(cmd)
	return cmd
}
