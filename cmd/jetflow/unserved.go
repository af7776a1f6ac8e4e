package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// warnUnserved says on stderr, one line per type, which node types of w no live worker
// serves: their steps would wait until a worker for the type starts. It says nothing when
// the workers bucket cannot be read (not set up, or no permission to read it).
func (a *app) warnUnserved(ctx context.Context, c *conn, w *workflow.Workflow) {
	served, err := consumer.ServedTypes(ctx, c.js, c.names)
	if err != nil {
		return
	}
	var types []string
	nodes := map[string][]string{}
	for _, n := range w.Nodes {
		if served[n.Type] {
			continue
		}
		if _, seen := nodes[n.Type]; !seen {
			types = append(types, n.Type)
		}
		nodes[n.Type] = append(nodes[n.Type], n.Name)
	}
	for _, t := range types {
		fmt.Fprintf(a.stderr, "warning: no live worker serves node type %s (workflow %s, %s %s): its steps wait until a worker for %s starts\n",
			t, w.Name, plural(len(nodes[t]), "node", "nodes"), strings.Join(nodes[t], ", "), t)
	}
}

// warnUnservedNamed is warnUnserved for the current definition of the workflow name.
func (a *app) warnUnservedNamed(ctx context.Context, c *conn, name string) {
	ref, err := c.store.WorkflowRef(ctx, name)
	if err != nil || ref == nil {
		return
	}
	if w, err := c.store.Definition(ctx, ref.Hash); err == nil {
		a.warnUnserved(ctx, c, w)
	}
}

// nodeStatus is a node's status as `runs get` prints it: a pending step no live worker
// serves says so.
func nodeStatus(n *checkpoint.NodeView) string {
	switch {
	case n.Status == checkpoint.StatusPending && n.Reason != "":
		return n.Status + " (" + n.Reason + ")"
	case n.Items != nil:
		s := fmt.Sprintf("%s (%d/%d items", n.Status, n.Items.Done, n.Items.Count)
		if n.Items.Dead > 0 {
			s += fmt.Sprintf(", %d dead", n.Items.Dead)
		}
		return s + ")"
	case n.Child != "":
		return n.Status + " (child " + n.Child + ")"
	case n.Signal != "" && n.Status == checkpoint.StatusWaiting:
		return n.Status + " (signal " + n.Signal + ")"
	}
	return n.Status
}
