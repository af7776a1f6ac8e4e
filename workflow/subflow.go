package workflow

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnknownWorkflow is what a CheckSubflows lookup returns, wrapped or not, for a workflow
// that is neither registered nor being applied.
var ErrUnknownWorkflow = errors.New("unknown workflow")

// CheckSubflows follows w's subflow nodes (type workflow) to the workflows they run, and
// theirs, and refuses a cycle (a runs b runs a, or a runs a) and nesting deeper than
// MaxSubflowDepth. lookup returns the definition of a workflow name: the one being applied
// with w, else the registered one. An error wrapping ErrUnknownWorkflow makes a subflow node
// of w that runs that name a problem; (nil, nil) means the name is not known and may stay so
// (validation without a registry): it is not followed. Other lookup errors are returned as
// they are.
//
// Problems are a *ValidationError with paths "$.nodes[i].with.workflow" in w; Locate places
// them in w's file. w itself is taken as given, never looked up, and should be valid.
func CheckSubflows(w *Workflow, lookup func(name string) (*Workflow, error)) error {
	c := &subflowCheck{
		lookup: lookup,
		defs:   map[string]lookedUp{},
		height: map[string]int{},
		next:   map[string]string{},
		path:   []string{w.Name},
	}
	var ps []Problem
	for i, n := range w.Nodes {
		name, ok := subflowTarget(n)
		if !ok {
			continue
		}
		at := fmt.Sprintf("$.nodes[%d].with.workflow", i)
		if name == w.Name {
			ps = append(ps, Problem{Path: at, Msg: "subflow cycle: " + arrows(w.Name, w.Name)})
			continue
		}
		def, err := c.get(name)
		switch {
		case errors.Is(err, ErrUnknownWorkflow):
			ps = append(ps, Problem{Path: at, Msg: fmt.Sprintf("unknown workflow %s: apply it first or in the same command", name)})
			continue
		case err != nil:
			return err
		case def == nil:
			continue
		}
		cycle, err := c.visit(name)
		if err != nil {
			return err
		}
		if cycle != nil {
			ps = append(ps, Problem{Path: at, Msg: "subflow cycle: " + arrows(cycle...)})
			break // one cycle is enough: every path through it is a cycle too
		}
		if depth := 1 + c.height[name]; depth > MaxSubflowDepth {
			long := []string{w.Name}
			for s := name; s != ""; s = c.next[s] {
				long = append(long, s)
			}
			ps = append(ps, Problem{Path: at, Msg: fmt.Sprintf("subflows nest %d deep (%s); at most %d levels are allowed", depth, oneLine(arrows(long...), 400), MaxSubflowDepth)})
		}
	}
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

// subflowCheck walks the workflows subflow nodes run, depth first, remembering what it found.
type subflowCheck struct {
	lookup func(string) (*Workflow, error)
	defs   map[string]lookedUp
	height map[string]int    // of a workflow walked: the longest chain of subflows below it
	next   map[string]string // the workflow that chain goes through next ("" at its end)
	path   []string          // the workflows being walked, from the one checked
}

type lookedUp struct {
	w   *Workflow
	err error
}

// get looks name up once.
func (c *subflowCheck) get(name string) (*Workflow, error) {
	if l, ok := c.defs[name]; ok {
		return l.w, l.err
	}
	w, err := c.lookup(name)
	if err != nil && !errors.Is(err, ErrUnknownWorkflow) {
		err = fmt.Errorf("look up workflow %s: %w", name, err)
	}
	c.defs[name] = lookedUp{w, err}
	return w, err
}

// visit walks the subflows of the workflow name and records its height. It returns the first
// cycle it meets, as the path from the workflow checked with the repeated name at its end.
// Workflows that are not known are not followed.
func (c *subflowCheck) visit(name string) ([]string, error) {
	if slices.Contains(c.path, name) {
		return append(slices.Clone(c.path), name), nil
	}
	if _, done := c.height[name]; done {
		return nil, nil
	}
	w, err := c.get(name)
	if errors.Is(err, ErrUnknownWorkflow) || (err == nil && w == nil) {
		c.height[name] = 0
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	c.path = append(c.path, name)
	defer func() { c.path = c.path[:len(c.path)-1] }()
	h := 0
	for _, n := range w.Nodes {
		child, ok := subflowTarget(n)
		if !ok {
			continue
		}
		cycle, err := c.visit(child)
		if cycle != nil || err != nil {
			return cycle, err
		}
		if c.height[child]+1 > h {
			h, c.next[name] = c.height[child]+1, child
		}
	}
	c.height[name] = h
	return nil, nil
}

// subflowTarget returns the workflow a subflow node runs.
func subflowTarget(n *Node) (string, bool) {
	if n == nil || n.Type != SubflowType {
		return "", false
	}
	name, ok := n.With["workflow"].(string)
	return name, ok && ValidName(name)
}

func arrows(names ...string) string { return strings.Join(names, " → ") }
