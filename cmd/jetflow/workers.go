package main

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/setup"
)

func (a *app) workersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "Live workers",
		Args:  cobra.NoArgs,
		RunE:  groupHelp,
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the live workers: ID, host, pid, version, node types, steps in flight, started, last seen",
		Long: "ls lists the workers whose presence record (refreshed every 5 s) was seen within the last\n" +
			"15 s. A worker that stopped cleanly removes its record at once; a crashed one drops out\n" +
			"after 15 s.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.connect(ctx, "workers ls", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			ws, err := consumer.LiveWorkers(ctx, c.js, c.names, time.Now())
			if errors.Is(err, checkpoint.ErrNotSetUp) {
				return failedErr(err)
			} else if err != nil {
				return natsErr(a.natsURL, err)
			}
			if a.jsonOut {
				return a.printJSON(ws)
			}
			if len(ws) == 0 {
				fmt.Fprintf(a.stdout, "No live workers (none seen in the last %s).\n", setup.WorkerPresenceTTL)
				return nil
			}
			tw := table(a.stdout)
			fmt.Fprintln(tw, "ID\tHOST\tPID\tVERSION\tTYPES\tIN-FLIGHT\tSTARTED\tSEEN")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s ago\t%s ago\n", w.ID, cmp.Or(w.Host, "-"), w.PID, cmp.Or(w.Version, "-"),
					short(strings.Join(w.Types, ","), 40), w.InFlight, age(w.Started), age(w.Seen))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON: a list of {id, host, pid, version, types, in_flight, started, seen}")
	cmd.AddCommand(ls)
	return cmd
}
