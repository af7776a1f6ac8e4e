package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
)

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect, replay and purge the dead-letter queue", Args: cobra.NoArgs, RunE: groupHelp}
	cmd.AddCommand(a.dlqLsCmd(), a.dlqShowCmd(), a.dlqReplayCmd(), a.dlqPurgeCmd())
	return cmd
}

// dlqFilter holds the filter flags shared by ls, replay and purge.
type dlqFilter struct {
	f     dlq.Filter
	since string
}

func (d *dlqFilter) flags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&d.f.Workflow, "workflow", "", "only this workflow")
	fl.StringVar(&d.f.Node, "node", "", "only this node")
	fl.StringVar(&d.f.RunID, "run", "", "only this run")
	fl.StringVar(&d.f.Reason, "reason", "", "only entries whose reason contains this text")
	fl.StringVar(&d.since, "since", "", "only entries that failed within this duration (e.g. 1h, 7d, 1d12h)")
	fl.IntVar(&d.f.Limit, "limit", 0, "at most this many entries (oldest first; default all)")
}

// filter returns the parsed filter.
func (d *dlqFilter) filter() (dlq.Filter, error) {
	f := d.f
	var err error
	if f.Since, err = since("--since", d.since); err != nil {
		return f, err
	}
	if f.Limit < 0 {
		return f, usageErr(errors.New("--limit must be positive"))
	}
	return f, nil
}

// given reports whether any filter flag was set.
func (d *dlqFilter) given() bool {
	return d.f.Workflow != "" || d.f.Node != "" || d.f.RunID != "" || d.f.Reason != "" || d.since != "" || d.f.Limit != 0
}

// none is what to say when no entry matched.
func (d *dlqFilter) none() string {
	if d.given() {
		return "no DLQ entries match"
	}
	return "no DLQ entries"
}

func (a *app) dlqLsCmd() *cobra.Command {
	var (
		df    dlqFilter
		group bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List DLQ entries, oldest first (--group: counts by workflow, node and reason)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := df.filter()
			if err != nil {
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
			if group {
				groups := dlq.Group(entries)
				if a.jsonOut {
					return a.printJSON(groups)
				}
				tw := table(a.stdout)
				fmt.Fprintln(tw, "COUNT\tWORKFLOW\tNODE\tREASON")
				for _, g := range groups {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", g.Count, dash(g.Workflow), dash(g.Node), short(g.Reason, reasonWidth))
				}
				return tw.Flush()
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
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, age(e.FailedAt), dash(e.Workflow), dash(e.Node), dash(e.RunID), e.Attempts, short(e.Reason, reasonWidth))
			}
			return tw.Flush()
		},
	}
	df.flags(cmd)
	cmd.Flags().BoolVar(&group, "group", false, "count entries by workflow, node and reason, most first")
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

// reasonWidth is how many characters of a reason the tables show (the last column, so a long
// one only makes its line longer): enough for the sweeper's "delivered N times without
// finishing (worker crash or timeout)" and a short error with it; `dlq show` has it all.
const reasonWidth = 100

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseIDs parses DLQ entry IDs.
func parseIDs(args []string) ([]uint64, error) {
	var ids []uint64
	for _, s := range args {
		id, err := strconv.ParseUint(s, 10, 64)
		if err != nil || id == 0 {
			return nil, usageErr(fmt.Errorf("DLQ entry ID %q: use the number in the ID column of `jetflow dlq ls`", short(s, 40)))
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// noEntry is the one-line error for a DLQ entry that is not there.
func noEntry(id uint64) error {
	return failedErr(fmt.Errorf("no DLQ entry %d: it was replayed, purged or aged out (see `jetflow dlq ls`)", id))
}

func (a *app) dlqShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one DLQ entry: headers, the full error, the node's input and the run's state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			c, err := a.connect(cmd.Context(), "dlq show", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			d, err := dlq.Show(cmd.Context(), c.js, c.names, ids[0])
			switch {
			case errors.Is(err, dlq.ErrNoEntry):
				return noEntry(ids[0])
			case err != nil:
				return failedErr(err)
			}
			if a.jsonOut {
				return a.printJSON(d)
			}
			a.printDetail(d)
			return nil
		},
	}
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

// printDetail prints a DLQ entry for people.
func (a *app) printDetail(d *dlq.Detail) {
	w := a.stdout
	tw := table(w)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("entry", strconv.FormatUint(d.ID, 10))
	row("workflow", d.Workflow)
	row("node", d.Node)
	runLine := d.RunID
	switch {
	case d.RunID == "":
	case d.Run == nil && d.Malformed == "":
		runLine += " (gone: purged after its retention?)"
	case d.Run != nil:
		runLine += " (" + d.Run.Status + ")"
	}
	row("run", runLine)
	row("reason", d.Reason)
	row("attempts", strconv.Itoa(d.Attempts))
	if !d.FailedAt.IsZero() {
		row("failed at", d.FailedAt.Local().Format("2006-01-02 15:04:05Z07:00")+" ("+age(d.FailedAt)+" ago)")
	}
	row("worker", d.Worker)
	row("subject", d.OriginalSubject)
	row("dispatch", d.Dispatch)
	_ = tw.Flush()

	section := func(title, body string) {
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if d.Error != "" {
		section("error", d.Error)
	}
	if d.Malformed != "" {
		section("malformed", d.Malformed)
		section("body", d.RawBody)
	} else {
		title := "input"
		if d.InputEdited {
			title = fmt.Sprintf("input (edited on the replay of DLQ entry %d)", d.EditedFrom)
		}
		var buf bytes.Buffer
		if json.Indent(&buf, d.Input, "", "  ") != nil {
			buf.Reset()
			buf.Write(d.Input)
		}
		section(title, buf.String())
	}
	var hs []string
	for k, vs := range d.Headers {
		for _, v := range vs {
			hs = append(hs, k+": "+v)
		}
	}
	slices.Sort(hs)
	section("headers", strings.Join(hs, "\n"))
	if d.Run != nil {
		v := d.Run
		line := "run " + v.ID + " " + v.Status
		if v.Reason != "" {
			line += ": " + v.Reason
		}
		fmt.Fprintf(w, "\n%s\n", line)
		tw := table(w)
		fmt.Fprintln(tw, "  NODE\tSTATUS\tATTEMPTS\tERROR")
		for _, name := range v.Order {
			n := v.Nodes[name]
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", name, n.Status, n.Attempts, short(strings.ReplaceAll(n.Error, "\n", " "), 80))
		}
		_ = tw.Flush()
	}
}

// replayLine is one entry's outcome in `dlq replay --json`.
type replayLine struct {
	*dlq.ReplayResult
	Error string `json:"error,omitempty"`
}

func (a *app) dlqReplayCmd() *cobra.Command {
	var (
		df     dlqFilter
		all    bool
		dryRun bool
		input  string
		rate   float64
	)
	cmd := &cobra.Command{
		Use:   "replay ID… | --all | FILTERS",
		Short: "Run DLQ entries' steps again",
		Long: `Run DLQ entries' steps again: each entry's node becomes retrying (attempts 0) and its step is
published again, then the entry is deleted. A run that failed only because of replayed nodes
is running again. Replaying an entry twice runs its step once. Runs that were cancelled or
purged are skipped (exit 1).

Select entries by ID, with --all, or with filters (as in ls). Bulk replays are throttled
by --rate.

--input (one ID only) replaces the node's whole input, the JSON object its handler receives:
{"input": <run input>, "nodes": {<parent>: <output>, ...}} — the "input" that
` + "`jetflow dlq show ID`" + ` prints. Without "nodes", the parents' outputs are kept. The edit is
recorded in the node state and applies to this node only.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			f, err := df.filter()
			if err != nil {
				return err
			}
			switch {
			case len(ids) > 0 && (all || df.given()):
				return usageErr(errors.New("give DLQ entry IDs, or --all and filters, not both"))
			case len(ids) == 0 && !all && !df.given():
				return usageErr(errors.New("say which entries to replay: IDs, --all, or filters such as --workflow (see `jetflow dlq ls`)"))
			case input != "" && len(ids) != 1:
				return usageErr(errors.New("--input edits one entry: give exactly one DLQ entry ID"))
			case rate <= 0:
				return usageErr(errors.New("--rate must be positive (entries per second)"))
			}
			var edited []byte
			if input != "" {
				raw, err := a.readArg("--input", input)
				if err != nil {
					return err
				}
				if edited, err = producer.CheckInput(raw, 0); err != nil {
					return usageErr(fmt.Errorf("--input: %w", err))
				}
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx, "dlq replay", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			if len(ids) == 0 {
				entries, err := dlq.List(ctx, c.js, c.names, f)
				if err != nil {
					return failedErr(err)
				}
				if len(entries) == 0 {
					if a.jsonOut {
						return a.printJSON([]replayLine{})
					}
					fmt.Fprintln(a.stdout, df.none())
					return nil
				}
				ids = dlq.IDs(entries)
			}

			var out []replayLine
			var errs []error
			report := func(res *dlq.ReplayResult, err error) {
				out = append(out, replayLine{ReplayResult: res, Error: replayError(res.ID, err)})
				if err != nil {
					errs = append(errs, err)
					if len(ids) > 1 && !a.jsonOut {
						fmt.Fprintf(a.stdout, "skipped %d: %s\n", res.ID, replayError(res.ID, err))
					}
					return
				}
				if !a.jsonOut {
					fmt.Fprintln(a.stdout, replayedLine(res))
				}
			}
			if edited != nil {
				res, err := dlq.Replay(ctx, c.js, c.store, c.names, ids[0], dlq.ReplayOptions{Input: edited, DryRun: dryRun})
				if errors.Is(err, producer.ErrBadInput) {
					return usageErr(fmt.Errorf("--input: %w", err))
				}
				report(res, err)
			} else if _, err := dlq.ReplayBatch(ctx, c.js, c.store, c.names, ids, dlq.BatchOptions{Rate: rate, DryRun: dryRun}, report); err != nil {
				return failedErr(fmt.Errorf("replay interrupted after %d of %d entries: %w", len(out), len(ids), err))
			}
			if a.jsonOut {
				for i := range out {
					if out[i].Error != "" {
						out[i].Status = "skipped"
					}
				}
				if err := a.printJSON(out); err != nil {
					return err
				}
				if len(errs) > 0 {
					return &exitError{code: exitFailed, silent: true}
				}
				return nil
			}
			switch {
			case len(errs) == 0:
				return nil
			case len(ids) == 1:
				if errors.Is(errs[0], dlq.ErrNoEntry) {
					return noEntry(ids[0])
				}
				return failedErr(errors.New(replayError(ids[0], errs[0])))
			}
			return failedErr(fmt.Errorf("%d of %d DLQ entries were not replayed (see the skipped lines)", len(errs), len(ids)))
		},
	}
	df.flags(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&all, "all", false, "replay every entry (with filters: every matching entry)")
	fl.StringVar(&input, "input", "", `with one ID: the node's whole new input, {"input": …, "nodes": …}: JSON, @file or @- (standard input)`)
	fl.Float64Var(&rate, "rate", dlq.DefaultReplayRate, "at most this many entries a second")
	fl.BoolVar(&dryRun, "dry-run", false, "check which entries would be replayed, change nothing")
	fl.BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

// replayedLine is the line printed for a replayed entry.
func replayedLine(res *dlq.ReplayResult) string {
	what := fmt.Sprintf("%d (run %s, node %s", res.ID, res.RunID, res.Node)
	if res.Edited {
		what += ", edited input"
	}
	switch res.Status {
	case dlq.StatusWouldReplay:
		return "would replay " + what + ")"
	case dlq.StatusAlreadyReplayed:
		return "replayed " + what + "; it had already been replayed)"
	}
	return "replayed " + what + ")"
}

// replayError is the one-line reason an entry was not replayed ("" for nil).
func replayError(id uint64, err error) string {
	var re *dlq.RefusedError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re):
		return re.Reason
	case errors.Is(err, dlq.ErrNoEntry):
		return fmt.Sprintf("no DLQ entry %d", id)
	}
	return oneLine(err.Error())
}

func (a *app) dlqPurgeCmd() *cobra.Command {
	var (
		df  dlqFilter
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "purge [FILTERS]",
		Short: "Delete DLQ entries (all, or those matching the filters); asks first unless --yes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := df.filter()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := a.connect(ctx, "dlq purge", false, false)
			if err != nil {
				return err
			}
			defer c.Close()
			entries, err := dlq.List(ctx, c.js, c.names, f)
			if err != nil {
				return failedErr(err)
			}
			if len(entries) == 0 {
				if a.jsonOut {
					return a.printJSON(map[string]int{"deleted": 0})
				}
				fmt.Fprintln(a.stdout, df.none())
				return nil
			}
			what := fmt.Sprintf("%d DLQ %s", len(entries), plural(len(entries), "entry", "entries"))
			if !yes {
				ok, err := a.confirm("Delete " + what + "?")
				if err != nil {
					return failedErr(fmt.Errorf("not deleting %s without confirmation: %w; pass --yes", what, err))
				}
				if !ok {
					return failedErr(fmt.Errorf("nothing deleted: answer y, or pass --yes to delete %s", what))
				}
			}
			n, err := dlq.Delete(ctx, c.js, c.names, dlq.IDs(entries)...)
			if err != nil {
				return failedErr(fmt.Errorf("deleted %d, then: %w", n, err))
			}
			if a.jsonOut {
				return a.printJSON(map[string]int{"deleted": n})
			}
			fmt.Fprintf(a.stdout, "deleted %d DLQ %s\n", n, plural(n, "entry", "entries"))
			return nil
		},
	}
	df.flags(cmd)
	cmd.Flags().BoolVar(&yes, "yes", false, "delete without asking")
	cmd.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// errNotTerminal means a confirmation cannot be asked for.
var errNotTerminal = errors.New("standard input is not a terminal")

// confirm asks a yes/no question on stderr and reads the answer from stdin; only y or yes is
// yes. A standard input that is a file or pipe, not a terminal, is not asked (errNotTerminal):
// scripts pass --yes. Other readers (tests, embedders) are asked.
func (a *app) confirm(question string) (bool, error) {
	if f, ok := a.stdin.(*os.File); ok {
		fi, err := f.Stat()
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return false, errNotTerminal
		}
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(a.stdin).ReadString('\n')
	ans := strings.ToLower(strings.TrimSpace(line))
	return ans == "y" || ans == "yes", nil
}
