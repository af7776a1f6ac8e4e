package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
)

func (a *app) runsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Aliases: []string{"run"}, Short: "Inspect runs", Args: cobra.NoArgs, RunE: groupHelp}
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a run and each node's state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connect(cmd.Context(), "runs get", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := c.store.Describe(cmd.Context(), args[0])
			if errors.Is(err, checkpoint.ErrNotFound) {
				return failedErr(fmt.Errorf("no run %q: check the ID (it may have been purged after its retention)", args[0]))
			} else if err != nil {
				return failedErr(err)
			}
			if a.jsonOut {
				return a.printJSON(v)
			}
			fmt.Fprintf(a.stdout, "run       %s\nworkflow  %s\nstatus    %s\ncreated   %s\n", v.ID, v.Workflow, v.Status, v.CreatedAt.Format("2006-01-02 15:04:05Z07:00"))
			if v.EndedAt != nil {
				fmt.Fprintf(a.stdout, "ended     %s\n", v.EndedAt.Format("2006-01-02 15:04:05Z07:00"))
			}
			if v.Reason != "" {
				fmt.Fprintf(a.stdout, "reason    %s\n", v.Reason)
			}
			fmt.Fprintln(a.stdout)
			tw := table(a.stdout)
			fmt.Fprintln(tw, "NODE\tSTATUS\tATTEMPTS\tDURATION\tOUTPUT / ERROR")
			for _, name := range v.Order {
				n := v.Nodes[name]
				dur := "-"
				if n.StartedAt != nil && n.EndedAt != nil {
					dur = n.EndedAt.Sub(*n.StartedAt).Round(1e6).String()
				}
				detail := string(n.Output)
				if n.Error != "" {
					detail = "error: " + n.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", name, n.Status, n.Attempts, dur, short(strings.ReplaceAll(detail, "\n", " "), 80))
			}
			return tw.Flush()
		},
	}
	get.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	cmd.AddCommand(get)
	return cmd
}
