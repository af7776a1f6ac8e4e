package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

func (a *app) workflowsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workflows", Aliases: []string{"workflow", "wf"}, Short: "Manage the workflow registry", Args: cobra.NoArgs, RunE: groupHelp}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "apply FILE…",
			Short: "Validate definitions and store them in the registry",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, files []string) error {
				defs, err := parseDefs(files)
				if err != nil {
					return err
				}
				c, err := a.connect(cmd.Context(), "workflows apply", false, true)
				if err != nil {
					return err
				}
				defer c.Close()
				if err := checkSubflows(defs, registryLookup(cmd.Context(), c)); err != nil {
					return err
				}
				for _, w := range applyOrder(defs) {
					hash, changed, err := a.applyWorkflow(cmd.Context(), c, w, true)
					if err != nil {
						return err
					}
					what := "unchanged"
					if changed {
						what = "applied"
					}
					fmt.Fprintf(a.stdout, "%s %s (%d nodes, %s)\n", what, w.Name, len(w.Nodes), hash[:12])
					a.warnDefinition(w)
					a.warnUnserved(cmd.Context(), c, w)
					a.warnNoResponder(cmd.Context(), c, w)
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "validate FILE…",
			Short: "Check definitions without storing them",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, files []string) error {
				wfs, err := parseFiles(files)
				if err != nil {
					return err
				}
				for _, w := range wfs {
					fmt.Fprintf(a.stdout, "workflow %s is valid (%d nodes)\n", w.Name, len(w.Nodes))
					a.warnDefinition(w)
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "ls",
			Short: "List registered workflows",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				c, err := a.connect(cmd.Context(), "workflows ls", false, true)
				if err != nil {
					return err
				}
				defer c.Close()
				refs, err := c.store.Workflows(cmd.Context())
				if err != nil {
					return failedErr(err)
				}
				if a.jsonOut {
					if refs == nil {
						refs = []*checkpoint.WorkflowRef{}
					}
					return a.printJSON(refs)
				}
				tw := table(a.stdout)
				fmt.Fprintln(tw, "NAME\tHASH\tUPDATED")
				for _, r := range refs {
					fmt.Fprintf(tw, "%s\t%s\t%s ago\n", r.Name, r.Hash[:12], age(r.Updated))
				}
				return tw.Flush()
			},
		},
		&cobra.Command{
			Use:   "graph NAME",
			Short: "Print a registered workflow as a Mermaid flowchart",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.connect(cmd.Context(), "workflows graph", false, true)
				if err != nil {
					return err
				}
				defer c.Close()
				ref, err := c.store.WorkflowRef(cmd.Context(), args[0])
				if errors.Is(err, checkpoint.ErrNotFound) {
					return usageErr(fmt.Errorf("unknown workflow %q: see `jetflow workflows ls`", args[0]))
				} else if err != nil {
					return failedErr(err)
				}
				w, err := c.store.Definition(cmd.Context(), ref.Hash)
				if err != nil {
					return failedErr(err)
				}
				fmt.Fprint(a.stdout, mermaid(w))
				return nil
			},
		},
	)
	for _, sub := range cmd.Commands() {
		if sub.Name() == "ls" {
			sub.Flags().BoolVar(&a.jsonOut, "json", false, "print JSON")
		}
	}
	return cmd
}

// parseFiles reads and validates definition files (directories: their *.yaml, *.yml and
// *.json files), their subflows among them included: a subflow running a workflow that is
// not among them is left to apply to check.
func parseFiles(paths []string) ([]*workflow.Workflow, error) {
	defs, err := parseDefs(paths)
	if err != nil {
		return nil, err
	}
	if err := checkSubflows(defs, nil); err != nil {
		return nil, err
	}
	out := make([]*workflow.Workflow, len(defs))
	for i, d := range defs {
		out[i] = d.w
	}
	return out, nil
}

// def is a definition read from a file.
type def struct {
	file string
	data []byte
	w    *workflow.Workflow
}

// parseDefs reads and validates definition files, each on its own.
func parseDefs(paths []string) ([]def, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, usageErr(fmt.Errorf("%s: no such file", p))
		}
		if fi.IsDir() {
			fs, err := definitionFiles(p)
			if err != nil {
				return nil, usageErr(err)
			}
			files = append(files, fs...)
			continue
		}
		files = append(files, p)
	}
	var out []def
	seen := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usageErr(fmt.Errorf("%s: %w", f, err))
		}
		w, err := workflow.Parse(f, b, workflow.ValidateOptions{})
		if err != nil {
			return nil, usageErr(err)
		}
		if other, dup := seen[w.Name]; dup {
			return nil, usageErr(fmt.Errorf("%s: workflow %s is also defined in %s", f, w.Name, other))
		}
		seen[w.Name] = f
		out = append(out, def{file: f, data: b, w: w})
	}
	return out, nil
}

// checkSubflows checks the subflows of defs (workflow.CheckSubflows): the workflows they run
// are looked up among defs, then through registry. A nil registry knows no other workflow and
// requires none (validate); apply's requires every one to exist.
func checkSubflows(defs []def, registry func(name string) (*workflow.Workflow, error)) error {
	byName := make(map[string]*workflow.Workflow, len(defs))
	for _, d := range defs {
		byName[d.w.Name] = d.w
	}
	lookup := func(name string) (*workflow.Workflow, error) {
		if w, ok := byName[name]; ok {
			return w, nil
		}
		if registry == nil {
			return nil, nil
		}
		return registry(name)
	}
	for _, d := range defs {
		err := workflow.CheckSubflows(d.w, lookup)
		var ve *workflow.ValidationError
		switch {
		case errors.As(err, &ve):
			return usageErr(ve.Locate(d.file, d.data))
		case err != nil:
			return failedErr(fmt.Errorf("%s: %w", d.file, err))
		}
	}
	return nil
}

// registryLookup looks workflows up in the registry: an unregistered name is
// workflow.ErrUnknownWorkflow.
func registryLookup(ctx context.Context, c *conn) func(name string) (*workflow.Workflow, error) {
	return func(name string) (*workflow.Workflow, error) {
		ref, err := c.store.WorkflowRef(ctx, name)
		if errors.Is(err, checkpoint.ErrNotFound) {
			return nil, fmt.Errorf("workflow %s: %w", name, workflow.ErrUnknownWorkflow)
		} else if err != nil {
			return nil, err
		}
		return c.store.Definition(ctx, ref.Hash)
	}
}

// applyOrder returns the workflows of defs in their order, except that a workflow a subflow
// runs comes before the workflows that run it, so none is registered before what it runs.
// defs hold no subflow cycle.
func applyOrder(defs []def) []*workflow.Workflow {
	byName := make(map[string]*workflow.Workflow, len(defs))
	for _, d := range defs {
		byName[d.w.Name] = d.w
	}
	var out []*workflow.Workflow
	placed := map[string]bool{}
	var place func(w *workflow.Workflow)
	place = func(w *workflow.Workflow) {
		if placed[w.Name] {
			return
		}
		placed[w.Name] = true
		for _, n := range w.Nodes {
			if name, ok := n.With["workflow"].(string); ok && n.Type == workflow.SubflowType && byName[name] != nil {
				place(byName[name])
			}
		}
		out = append(out, w)
	}
	for _, d := range defs {
		place(d.w)
	}
	return out
}

// definitionFiles lists the definition files of a directory, sorted.
func definitionFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// mermaid draws w as a Mermaid flowchart.
func mermaid(w *workflow.Workflow) string {
	var b strings.Builder
	b.WriteString("flowchart TD\n")
	for _, n := range w.Nodes {
		fmt.Fprintf(&b, "  %s[\"%s<br/><small>%s</small>\"]\n", n.Name, n.Name, n.Type)
	}
	for _, n := range w.Nodes {
		for _, p := range n.Needs {
			fmt.Fprintf(&b, "  %s --> %s\n", p, n.Name)
		}
	}
	return b.String()
}

// warnDefinition prints, on stderr, the definition's advice that does not refuse it.
func (a *app) warnDefinition(w *workflow.Workflow) {
	for _, line := range w.Warnings() {
		fmt.Fprintf(a.stderr, "warning: workflow %s: %s\n", w.Name, line)
	}
}

// applyWorkflow stores a definition and applies its nodes' concurrency caps to their types'
// consumers, saying on stderr what it changed there. A worker passes update false: it creates
// missing consumers but changes none it finds (DESIGN.md), and says where a cap differs.
func (a *app) applyWorkflow(ctx context.Context, c *conn, w *workflow.Workflow, update bool) (string, bool, error) {
	var prev *workflow.Workflow // the definition this one replaces, for its trigger
	if ref, err := c.store.WorkflowRef(ctx, w.Name); err == nil && ref != nil {
		prev, _ = c.store.Definition(ctx, ref.Hash)
	}
	hash, changed, err := c.store.ApplyWorkflow(ctx, w)
	if err != nil {
		return "", false, failedErr(fmt.Errorf("apply %s: %w", w.Name, err))
	}
	tlines, err := setup.ApplyTrigger(ctx, c.js, c.names, prev, w)
	for _, l := range tlines {
		fmt.Fprintf(a.stderr, "%s (workflow %s)\n", l, w.Name)
	}
	if err != nil {
		return "", false, failedErr(fmt.Errorf("apply %s: %w", w.Name, err))
	}
	lines, err := setup.ApplyConcurrency(ctx, c.js, c.names, w, update)
	for _, l := range lines {
		fmt.Fprintf(a.stderr, "%s (workflow %s)\n", l, w.Name)
	}
	if err != nil {
		return "", false, failedErr(fmt.Errorf("apply %s: %w", w.Name, err))
	}
	return hash, changed, nil
}
