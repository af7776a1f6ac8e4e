package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/dlq"
)

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect the dead-letter queue", Args: cobra.NoArgs, RunE: groupHelp}
	var f dlq.Filter
	var sinceFlag string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List DLQ entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if f.Since, err = since("--since", sinceFlag); err != nil {
				return err
			}
			c, err := a.connect(cmd.Context(), "dlq ls", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			entries, err := dlq.List(cmd.Context(), c.js, c.names, f)
			if err != nil {
				return failedErr(err)
			}
			if a.jsonOut {
				if entries == nil {
					entries = []*dlq.Entry{}
				}
				return a.printJSON(entries)
			}
			tw := table(a.stdout)
			fmt.Fprintln(tw, "ID\tAGE\tWORKFLOW\tNODE\tRUN\tATTEMPTS\tREASON")
			for _, e := range entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, age(e.FailedAt), e.Workflow, e.Node, e.RunID, e.Attempts, short(e.Reason, 60))
			}
			return tw.Flush()
		},
	}
	fl := ls.Flags()
	fl.StringVar(&f.Workflow, "workflow", "", "only this workflow")
	fl.StringVar(&f.Node, "node", "", "only this node")
	fl.StringVar(&f.RunID, "run", "", "only this run")
	fl.StringVar(&f.Reason, "reason", "", "only entries whose reason contains this text")
	fl.StringVar(&sinceFlag, "since", "", "only entries that failed within this duration (e.g. 1h)")
	fl.IntVar(&f.Limit, "limit", 0, "at most this many entries")
	fl.BoolVar(&a.jsonOut, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}
