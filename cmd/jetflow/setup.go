package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

func (a *app) setupCmd() *cobra.Command {
	var (
		replicas      int
		typ           string
		maxAckPending int
		ackWait       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create or update streams, buckets and consumers (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("replicas") {
				replicas = 0 // keep what an existing install has
			} else if replicas < 1 || replicas > 5 {
				return usageErr(errors.New("--replicas: use 1 to 5 (3 on a cluster)"))
			}
			if typ != "" && !workflow.ValidName(typ) {
				return usageErr(fmt.Errorf("--type %q: use letters, digits, '_' and '-' only", typ))
			}
			if (maxAckPending != 0 || ackWait != 0) && typ == "" {
				return usageErr(errors.New("--max-ack-pending and --ack-wait tune one node type: add --type NAME"))
			}
			c, err := a.connect(cmd.Context(), "setup", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			cfg := setup.Config{Names: c.names, Replicas: replicas}
			if typ != "" {
				cfg.Types = append(cfg.Types, setup.ConsumerConfig{Type: typ, MaxAckPending: maxAckPending, AckWait: ackWait})
			}
			rep, err := setup.Run(cmd.Context(), c.js, cfg)
			if rep != nil {
				for _, l := range rep.Lines {
					fmt.Fprintln(a.stdout, l)
				}
			}
			if err != nil {
				return failedErr(err)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 1, "replicas of every stream and bucket (3 on a cluster); without it an existing install keeps its replicas")
	cmd.Flags().StringVar(&typ, "type", "", "also create (or tune) the consumer of this node type")
	cmd.Flags().IntVar(&maxAckPending, "max-ack-pending", 0, "with --type: cluster-wide cap on the type's steps in flight (default 1000)")
	cmd.Flags().DurationVar(&ackWait, "ack-wait", 0, "with --type: how long a step may go without an ack or heartbeat (default 30s)")
	return cmd
}
