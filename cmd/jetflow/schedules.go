package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// scheduleView is one line of `schedules ls --json`.
type scheduleView struct {
	Name     string     `json:"name"`
	Workflow string     `json:"workflow"`
	Spec     string     `json:"spec"`
	NextFire *time.Time `json:"next_fire"`
	LastRun  string     `json:"last_run"`
	Paused   bool       `json:"paused"`
}

func (a *app) schedulesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "schedules", Aliases: []string{"schedule"}, Short: "Start runs on a clock, fired by the NATS server: add, ls, rm, pause, resume", Args: cobra.NoArgs, RunE: groupHelp}
	var (
		wf, cron, tz, input string
		every               time.Duration
	)
	add := &cobra.Command{
		Use:   "add NAME --workflow W (--every D | --cron EXPR [--tz ZONE]) [--input JSON|@file]",
		Short: "Add a schedule: the server fires it (also while no worker runs), each fire one run <NAME>-<unix seconds>",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !workflow.ValidName(name) || len(name) > workflow.MaxScheduleName {
				return usageErr(fmt.Errorf("schedule name %q: use up to %d letters, digits, '_' and '-'", workflow.OneLine(name, 80), workflow.MaxScheduleName))
			}
			if !workflow.ValidName(wf) {
				return usageErr(errors.New("--workflow: name the workflow each fire starts"))
			}
			sc := &checkpoint.Schedule{Name: name, Workflow: wf, Created: time.Now().UTC()}
			switch {
			case (every > 0) == (cron != ""):
				return usageErr(errors.New("give one of --every (such as 1h) and --cron (such as \"0 9 * * 1-5\")"))
			case every > 0 && every < time.Second:
				return usageErr(errors.New("--every: at least 1s"))
			case every > 0 && tz != "":
				return usageErr(errors.New("--tz goes with --cron (an @every schedule has no time zone)"))
			case every > 0:
				sc.Every = workflow.Duration(every)
			default:
				_, six, err := workflow.ParseCron(cron, tz)
				if err != nil {
					return usageErr(fmt.Errorf("--cron: %w", err))
				}
				sc.Cron, sc.TZ = six, tz
			}
			if input != "" {
				raw, err := a.readArg("--input", input)
				if err != nil {
					return err
				}
				if sc.Input, err = producer.CheckInput(raw, 0); err != nil {
					return usageErr(fmt.Errorf("--input: %w", err))
				}
			}
			c, err := a.connect(cmd.Context(), "schedules add", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			if ref, err := c.store.WorkflowRef(cmd.Context(), wf); err != nil || ref == nil {
				return usageErr(fmt.Errorf("unknown workflow %q: apply it with `jetflow workflows apply FILE` (see `jetflow workflows ls`)", wf))
			}
			if err := c.store.AddSchedule(cmd.Context(), sc); errors.Is(err, checkpoint.ErrScheduleExists) {
				return failedErr(fmt.Errorf("schedule %s exists: remove it first (`jetflow schedules rm %s`)", name, name))
			} else if err != nil {
				return failedErr(err)
			}
			if err := producer.PublishSchedule(cmd.Context(), c.js, c.names, sc.Name, sc.Workflow, sc.Input, sc.Pattern(), sc.TZ); err != nil {
				_ = c.store.DeleteSchedule(context.WithoutCancel(cmd.Context()), name)
				return failedErr(err)
			}
			fmt.Fprintf(a.stdout, "schedule %s added: %s starts %s; next fire %s\n", name, sc.Spec(), wf, fireTime(sc.NextFire(time.Now())))
			return nil
		},
	}
	f := add.Flags()
	f.StringVar(&wf, "workflow", "", "the workflow each fire starts")
	f.DurationVar(&every, "every", 0, "fire every D (at least 1s), counted from now")
	f.StringVar(&cron, "cron", "", "fire on a cron expression: 5 fields (minute hour day month weekday) or 6 (seconds first)")
	f.StringVar(&tz, "tz", "", "the cron expression's time zone, such as Europe/Paris (default UTC)")
	f.StringVar(&input, "input", "", "each run's input: JSON, @file or @- (default null)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List schedules: spec, next fire, last run, paused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connect(cmd.Context(), "schedules ls", false, true)
			if err != nil {
				return err
			}
			defer c.Close()
			scs, err := c.store.Schedules(cmd.Context())
			if err != nil {
				return failedErr(err)
			}
			slices.SortFunc(scs, func(x, y *checkpoint.Schedule) int { return cmp.Compare(x.Name, y.Name) })
			views := make([]scheduleView, 0, len(scs))
			for _, sc := range scs {
				v := scheduleView{Name: sc.Name, Workflow: sc.Workflow, Spec: sc.Spec(), Paused: sc.Paused, LastRun: lastRun(cmd.Context(), c.store, sc)}
				if next := sc.NextFire(time.Now()); !next.IsZero() {
					v.NextFire = &next
				}
				views = append(views, v)
			}
			if a.jsonOut {
				return a.printJSON(views)
			}
			tw := table(a.stdout)
			fmt.Fprintln(tw, "NAME\tWORKFLOW\tSPEC\tNEXT FIRE\tLAST RUN\tPAUSED")
			for _, v := range views {
				next := "-"
				if v.NextFire != nil {
					next = fireTime(*v.NextFire)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", v.Name, v.Workflow, v.Spec, next, cmp.Or(v.LastRun, "-"), v.Paused)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")

	change := func(use, short string, fn func(ctx context.Context, c *conn, sc *checkpoint.Schedule, rev uint64) (string, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.connect(cmd.Context(), "schedules "+use, false, true)
				if err != nil {
					return err
				}
				defer c.Close()
				sc, rev, err := c.store.ReadSchedule(cmd.Context(), args[0])
				if errors.Is(err, checkpoint.ErrNotFound) {
					return failedErr(fmt.Errorf("no schedule %q (see `jetflow schedules ls`)", workflow.OneLine(args[0], 80)))
				} else if err != nil {
					return failedErr(err)
				}
				msg, err := fn(cmd.Context(), c, sc, rev)
				if err != nil {
					return failedErr(err)
				}
				fmt.Fprintln(a.stdout, msg)
				return nil
			},
		}
	}
	rm := change("rm", "Remove a schedule: it fires no more (runs it started stay)", func(ctx context.Context, c *conn, sc *checkpoint.Schedule, _ uint64) (string, error) {
		if err := producer.RemoveSchedule(ctx, c.js, c.names, sc.Name); err != nil {
			return "", err
		}
		return "schedule " + sc.Name + " removed", c.store.DeleteSchedule(ctx, sc.Name)
	})
	pause := change("pause", "Pause a schedule: no fires until resume", func(ctx context.Context, c *conn, sc *checkpoint.Schedule, rev uint64) (string, error) {
		if sc.Paused {
			return "schedule " + sc.Name + " was paused already", nil
		}
		sc.Paused = true
		if err := c.store.UpdateSchedule(ctx, sc, rev); err != nil {
			return "", err
		}
		return "schedule " + sc.Name + " paused", producer.RemoveSchedule(ctx, c.js, c.names, sc.Name)
	})
	resume := change("resume", "Resume a paused schedule (an @every schedule counts from now)", func(ctx context.Context, c *conn, sc *checkpoint.Schedule, rev uint64) (string, error) {
		sc.Paused, sc.Created = false, time.Now().UTC()
		if err := producer.PublishSchedule(ctx, c.js, c.names, sc.Name, sc.Workflow, sc.Input, sc.Pattern(), sc.TZ); err != nil {
			return "", err
		}
		if err := c.store.UpdateSchedule(ctx, sc, rev); err != nil {
			return "", err
		}
		return fmt.Sprintf("schedule %s resumed; next fire %s", sc.Name, fireTime(sc.NextFire(time.Now()))), nil
	})
	cmd.AddCommand(add, ls, rm, pause, resume)
	return cmd
}

// lastRun is the newest run a schedule started ("" for none).
func lastRun(ctx context.Context, store *checkpoint.Store, sc *checkpoint.Schedule) string {
	runs, err := store.ListRuns(ctx, checkpoint.RunFilter{Workflow: sc.Workflow})
	if err != nil {
		return ""
	}
	best := ""
	var at time.Time
	for _, r := range runs {
		if strings.HasPrefix(r.ID, sc.Name+"-") && r.CreatedAt.After(at) {
			best, at = r.ID, r.CreatedAt
		}
	}
	return best
}

func fireTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}
