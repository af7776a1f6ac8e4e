package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/metrics"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func (a *app) runsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Aliases: []string{"run"}, Short: "List, inspect, watch and cancel runs", Args: cobra.NoArgs, RunE: groupHelp}
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
				return noRun(args[0])
			} else if err != nil {
				return failedErr(err)
			}
			consumer.MarkUnserved(cmd.Context(), c.js, c.names, v)
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
			if v.CostUSD > 0 || v.SavedUSD > 0 {
				line := "cost      " + metrics.FormatUSD(v.CostUSD)
				if v.WastedUSD > 0 {
					line += " (" + metrics.FormatUSD(v.WastedUSD) + " of it wasted on answers lost to a crash)"
				}
				if v.SavedUSD > 0 {
					line += "; " + metrics.FormatUSD(v.SavedUSD) + " saved by resuming"
				}
				fmt.Fprintln(a.stdout, line)
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
				if n.CostUSD != nil {
					detail = llmDetail(n)
				}
				if n.Error != "" {
					detail = "error: " + n.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", name, nodeStatus(n), n.Attempts, dur, short(strings.ReplaceAll(detail, "\n", " "), 80))
			}
			return tw.Flush()
		},
	}
	get.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	cmd.AddCommand(a.runsLsCmd(), get, a.runsWatchCmd(), a.runsCancelCmd(), a.runsSignalCmd())
	return cmd
}

// llmDetail is an llm node's line in `runs get`: who answered, the cost and the tokens,
// then the answer.
func llmDetail(n *checkpoint.NodeView) string {
	var out struct {
		Content  string `json:"content"`
		Provider string `json:"provider"`
		Cached   bool   `json:"cached"`
	}
	_ = json.Unmarshal(n.Output, &out)
	var b strings.Builder
	if out.Provider != "" {
		b.WriteString(out.Provider)
		if n.Fallback {
			b.WriteString(" (fallback)")
		}
		b.WriteString(", ")
	}
	if out.Cached {
		b.WriteString("cached, ")
	}
	fmt.Fprintf(&b, "%s, %d+%d tokens", metrics.FormatUSD(*n.CostUSD), n.Usage.InputTokens, n.Usage.OutputTokens)
	if out.Content != "" {
		b.WriteString(": " + strconv.Quote(out.Content))
	}
	return b.String()
}

// noRun is the one-line error for an unknown run ID.
func noRun(id string) error {
	return failedErr(fmt.Errorf("no run %q: check the ID (it may have been purged after its retention, or its start request not taken by a worker yet)", workflow.OneLine(id, 80)))
}

func (a *app) runsLsCmd() *cobra.Command {
	var (
		f         checkpoint.RunFilter
		sinceFlag string
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.Status != "" && !slices.Contains(checkpoint.RunStatuses, f.Status) {
				return usageErr(fmt.Errorf("--status %q: use one of %s", workflow.OneLine(f.Status, 40), strings.Join(checkpoint.RunStatuses, ", ")))
			}
			if f.Limit < 0 {
				return usageErr(errors.New("--limit must be positive (0: no limit)"))
			}
			var err error
			if f.Since, err = since("--since", sinceFlag); err != nil {
				return err
			}
			c, err := a.connect(cmd.Context(), "runs ls", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			runs, err := c.store.ListRuns(cmd.Context(), f)
			if err != nil {
				return failedErr(err)
			}
			if a.jsonOut {
				return a.printJSON(runs)
			}
			tw := table(a.stdout)
			fmt.Fprintln(tw, "ID\tWORKFLOW\tSTATUS\tAGE\tDURATION\tREASON")
			for _, r := range runs {
				dur := "-"
				if r.EndedAt != nil {
					dur = r.EndedAt.Sub(r.CreatedAt).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Workflow, r.Status, age(r.CreatedAt), dur, short(r.Reason, 60))
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Status, "status", "", "only runs in this status: "+strings.Join(checkpoint.RunStatuses, ", "))
	fl.StringVar(&f.Workflow, "workflow", "", "only runs of this workflow")
	fl.StringVar(&sinceFlag, "since", "", "only runs started within this duration (e.g. 1h, 7d, 1d12h)")
	fl.IntVar(&f.Limit, "limit", 50, "at most this many runs (0: all)")
	fl.StringVar(&f.Parent, "parent", "", "only the subflow runs this run started")
	fl.BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

// watchLine is one event of `runs watch --json`.
type watchLine struct {
	At    time.Time        `json:"at"`
	Node  string           `json:"node,omitempty"`
	State *checkpoint.Node `json:"state,omitempty"`
	End   *checkpoint.End  `json:"end,omitempty"`
}

func (a *app) runsWatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Print each node change of a run until it ends; exit 0 completed, 1 failed or cancelled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connect(cmd.Context(), "runs watch", true, true)
			if err != nil {
				return err
			}
			defer c.Close()
			// A run just started is recorded once a worker takes its start request: give
			// that a moment before calling the ID unknown.
			wctx, cancel := context.WithTimeout(cmd.Context(), recordWait)
			_, err = c.store.WaitRun(wctx, args[0])
			cancel()
			if err != nil && errors.Is(err, context.DeadlineExceeded) {
				return noRun(args[0])
			} else if err != nil {
				return failedErr(err)
			}
			enc := json.NewEncoder(a.stdout)
			end, err := c.store.WatchRun(cmd.Context(), args[0], func(ev checkpoint.RunEvent) {
				if a.jsonOut {
					_ = enc.Encode(watchLine{At: ev.At, Node: ev.Node, State: ev.State, End: ev.End})
					return
				}
				at := ev.At.Local().Format("15:04:05")
				if ev.End != nil {
					line := "run " + ev.End.Status
					if ev.End.Reason != "" {
						line += ": " + ev.End.Reason
					}
					fmt.Fprintf(a.stdout, "%s %s\n", at, line)
					return
				}
				fmt.Fprintf(a.stdout, "%s %s %s\n", at, ev.Node, nodeChange(ev.State))
			})
			switch {
			case errors.Is(err, checkpoint.ErrNotFound):
				return noRun(args[0])
			case err != nil:
				return failedErr(err)
			case end.Status != checkpoint.EndCompleted:
				return &exitError{code: exitFailed, silent: true}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print one JSON object a line")
	return cmd
}

// nodeChange says what a node state means, in a few words.
func nodeChange(st *checkpoint.Node) string {
	switch st.Status {
	case checkpoint.StatusRunning:
		if it := st.Items; it != nil {
			return fmt.Sprintf("running (%d/%d items done, %d in flight)", it.Done, it.Count, len(it.Inflight))
		}
		s := fmt.Sprintf("running (attempt %d", st.Attempts+1)
		if st.Crashes > 0 {
			s += fmt.Sprintf(", after %d crashed %s", st.Crashes, plural(st.Crashes, "delivery", "deliveries"))
		}
		return s + ")"
	case checkpoint.StatusDone:
		if it := st.Items; it != nil {
			return fmt.Sprintf("done (%d items)", it.Count)
		}
		if st.Fallback {
			return fmt.Sprintf("done by its fallback (attempt %d)", st.Attempts)
		}
		return fmt.Sprintf("done (attempt %d)", st.Attempts)
	case checkpoint.StatusDead:
		s := fmt.Sprintf("dead (attempt %d)", st.Attempts)
		if st.Reason != "" {
			s += ": " + st.Reason
		}
		if st.DLQSeq != 0 {
			s += fmt.Sprintf("; DLQ entry %d", st.DLQSeq)
		}
		return s
	case checkpoint.StatusSkipped:
		return "skipped"
	case checkpoint.StatusWaiting:
		if st.Signal != "" {
			return "waiting for signal " + st.Signal + " (times out at " + st.NotBefore.Local().Format("2006-01-02 15:04:05") + ")"
		}
		return "waiting for subflow " + st.Child
	case checkpoint.StatusPending:
		return "pending"
	case checkpoint.StatusRetrying:
		switch {
		case strings.HasPrefix(st.Dispatch, "r") && st.Attempts == 0:
			s := fmt.Sprintf("retrying (replay %d, of DLQ entry %s", st.Replays, st.Dispatch[1:])
			if len(st.Input) > 0 {
				s += ", edited input"
			}
			return s + ")"
		case st.Attempts > 0 && st.LastError != "":
			s := fmt.Sprintf("retrying after attempt %d failed: %s", st.Attempts, short(workflow.OneLine(st.LastError, 200), 100))
			if !st.NotBefore.IsZero() {
				s += " (next at " + st.NotBefore.Local().Format("15:04:05") + ")"
			}
			return s
		case !st.NotBefore.IsZero():
			return "waiting until " + st.NotBefore.Local().Format("15:04:05")
		}
		return "retrying"
	}
	return st.Status
}

func (a *app) runsCancelCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a run: running handlers see their context cancelled, queued steps are skipped",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			c, err := a.connect(cmd.Context(), "runs cancel", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			cancelled, err := c.store.Cancel(cmd.Context(), id, reason)
			var ended *checkpoint.EndedError
			switch {
			case errors.Is(err, checkpoint.ErrNotFound):
				return noRun(id)
			case errors.As(err, &ended):
				return failedErr(fmt.Errorf("%w: nothing to cancel", err))
			case err != nil:
				return failedErr(err)
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"id": id, "status": checkpoint.EndCancelled, "already": !cancelled})
			}
			if cancelled {
				fmt.Fprintf(a.stdout, "cancelled %s\n", id)
			} else {
				fmt.Fprintf(a.stdout, "run %s was already cancelled\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded as the run's end reason (default \""+checkpoint.DefaultCancelReason+"\")")
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

func (a *app) runsSignalCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "signal ID NAME",
		Short: "Send signal NAME to a run: the wait node waiting for it (now or later) is done with --data as its output",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name := args[0], args[1]
			var raw json.RawMessage
			if data != "" {
				b, err := a.readArg("--data", data)
				if err != nil {
					return err
				}
				if raw, err = producer.CheckInput(b, checkpoint.DefaultMaxPayload); err != nil {
					return usageErr(fmt.Errorf("--data: %w", err))
				}
			}
			if !workflow.ValidName(name) {
				return usageErr(fmt.Errorf("signal name %q: use letters, digits, '_' and '-' only", workflow.OneLine(name, 80)))
			}
			c, err := a.connect(cmd.Context(), "runs signal", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			err = consumer.SendSignal(cmd.Context(), c.js, c.store, c.names, id, name, raw)
			switch {
			case errors.Is(err, checkpoint.ErrNotFound):
				return noRun(id)
			case errors.Is(err, consumer.ErrAlreadySignalled), errors.Is(err, consumer.ErrSignalTimedOut),
				errors.Is(err, consumer.ErrRunEnded), errors.Is(err, consumer.ErrUnknownSignal):
				return failedErr(fmt.Errorf("signal %s to run %s refused: %w", name, id, err))
			case err != nil:
				return failedErr(err)
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"id": id, "signal": name, "sent": true})
			}
			fmt.Fprintf(a.stdout, "signal %s sent to run %s\n", name, id)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the signal's data, the wait node's output: JSON, @file or @- (default null)")
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}
