package workflow

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// runs returns a workflow name whose node n0 is a noop and whose nodes s1, s2, … run the
// given workflows as subflows.
func runs(name string, children ...string) *Workflow {
	w := New(name)
	w.Node("n0", "noop")
	for i, c := range children {
		w.Node(fmt.Sprintf("s%d", i+1), SubflowType, "n0").WithArgs(map[string]any{"workflow": c})
	}
	return w
}

// registry returns a lookup over ws: names not among them are unknown.
func registry(ws ...*Workflow) func(string) (*Workflow, error) {
	m := map[string]*Workflow{}
	for _, w := range ws {
		m[w.Name] = w
	}
	return func(name string) (*Workflow, error) {
		if w, ok := m[name]; ok {
			return w, nil
		}
		return nil, fmt.Errorf("workflow %s: %w", name, ErrUnknownWorkflow)
	}
}

// nest returns the workflows w0 … w<depth>, each running the next as a subflow.
func nest(depth int) []*Workflow {
	var ws []*Workflow
	for i := range depth + 1 {
		if i == depth {
			ws = append(ws, runs(fmt.Sprintf("w%d", i)))
			break
		}
		ws = append(ws, runs(fmt.Sprintf("w%d", i), fmt.Sprintf("w%d", i+1)))
	}
	return ws
}

func TestCheckSubflows(t *testing.T) {
	t.Parallel()
	lookupErr := errors.New("nats: timeout")
	tests := []struct {
		name   string
		w      *Workflow
		lookup func(string) (*Workflow, error)
		want   string // the whole Error(); empty means valid
		path   string // the first problem's path
	}{
		{name: "no subflows", w: runs("a"), lookup: registry()},
		{name: "one subflow", w: runs("a", "b"), lookup: registry(runs("b"))},
		{name: "diamond of subflows", w: runs("a", "b", "c"), lookup: registry(runs("b", "d"), runs("c", "d"), runs("d"))},
		{name: "the same subflow twice", w: runs("a", "b", "b"), lookup: registry(runs("b"))},
		{name: "depth 10", w: nest(10)[0], lookup: registry(nest(10)...)},
		{name: "not known, not required", w: runs("a", "b"), lookup: func(string) (*Workflow, error) { return nil, nil }},
		{name: "unknown below is not followed", w: runs("a", "b"), lookup: registry(runs("b", "nope"))},
		{name: "registered version of the checked workflow is not used", w: runs("a", "b"), lookup: registry(runs("a", "a"), runs("b"))},

		{name: "cycle of two", w: runs("a", "b"), lookup: registry(runs("b", "a")),
			want: "$.nodes[1].with.workflow: subflow cycle: a → b → a", path: "$.nodes[1].with.workflow"},
		{name: "self cycle", w: runs("a", "a"), lookup: registry(),
			want: "$.nodes[1].with.workflow: subflow cycle: a → a", path: "$.nodes[1].with.workflow"},
		{name: "cycle below", w: runs("a", "x", "b"), lookup: registry(runs("x"), runs("b", "c"), runs("c", "b")),
			want: "$.nodes[2].with.workflow: subflow cycle: a → b → c → b", path: "$.nodes[2].with.workflow"},
		{name: "self cycle below", w: runs("a", "b"), lookup: registry(runs("b", "b")),
			want: "$.nodes[1].with.workflow: subflow cycle: a → b → b", path: "$.nodes[1].with.workflow"},
		{name: "depth 11", w: nest(11)[0], lookup: registry(nest(11)...),
			want: "$.nodes[1].with.workflow: subflows nest 11 deep (w0 → w1 → w2 → w3 → w4 → w5 → w6 → w7 → w8 → w9 → w10 → w11); at most 10 levels are allowed", path: "$.nodes[1].with.workflow"},
		{name: "depth 11 through the longer branch", w: runs("top", "w1", "short"), lookup: registry(append(nest(11)[1:], runs("short"))...),
			want: "$.nodes[1].with.workflow: subflows nest 11 deep (top → w1 → w2 → w3 → w4 → w5 → w6 → w7 → w8 → w9 → w10 → w11); at most 10 levels are allowed", path: "$.nodes[1].with.workflow"},
		{name: "unknown workflow", w: runs("a", "nope"), lookup: registry(),
			want: "$.nodes[1].with.workflow: unknown workflow nope: apply it first or in the same command", path: "$.nodes[1].with.workflow"},
		{name: "two unknown workflows", w: runs("a", "b", "nope", "gone"), lookup: registry(runs("b")),
			want: "$.nodes[2].with.workflow: unknown workflow nope: apply it first or in the same command (and 1 more problem)", path: "$.nodes[2].with.workflow"},
		{name: "lookup fails", w: runs("a", "b"), lookup: func(string) (*Workflow, error) { return nil, lookupErr },
			want: "look up workflow b: nats: timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckSubflows(tt.w, tt.lookup)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckSubflows: %v", err)
				}
				return
			}
			requireOneLine(t, err)
			if got := err.Error(); got != tt.want {
				t.Fatalf("CheckSubflows:\n got %s\nwant %s", got, tt.want)
			}
			var ve *ValidationError
			if tt.path == "" {
				if errors.As(err, &ve) || !errors.Is(err, lookupErr) {
					t.Fatalf("error %v (%T): want the lookup's error, not a problem", err, err)
				}
				return
			}
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError", err)
			}
			if got := ve.Problems[0].Path; got != tt.path {
				t.Fatalf("path = %q, want %q", got, tt.path)
			}
		})
	}
}

// TestCheckSubflowsLooksUpOnce: each workflow is looked up once, however many paths reach it.
func TestCheckSubflowsLooksUpOnce(t *testing.T) {
	t.Parallel()
	// Every level runs both workflows of the next level: 2^20 paths, 40 workflows.
	var ws []*Workflow
	for i := range 20 {
		next := []string{fmt.Sprintf("l%da", i+1), fmt.Sprintf("l%db", i+1)}
		if i == 19 {
			next = nil
		}
		ws = append(ws, runs(fmt.Sprintf("l%da", i), next...), runs(fmt.Sprintf("l%db", i), next...))
	}
	calls := map[string]int{}
	reg := registry(ws...)
	err := CheckSubflows(runs("top", "l1a"), func(name string) (*Workflow, error) {
		calls[name]++
		return reg(name)
	})
	if err == nil || !strings.Contains(err.Error(), "subflows nest 19 deep") {
		t.Fatalf("CheckSubflows: %v; want nesting 19 deep refused", err)
	}
	for name, n := range calls {
		if n != 1 {
			t.Errorf("%s looked up %d times", name, n)
		}
	}
}

func TestValidationErrorLocate(t *testing.T) {
	t.Parallel()
	src := "name: a\nnodes:\n  - name: start\n    type: noop\n  - name: call\n    type: workflow\n    needs: [start]\n    with: {workflow: b}\n"
	a, err := Parse("a.yaml", []byte(src), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = CheckSubflows(a, registry(runs("b", "a")))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("CheckSubflows: %v; want a *ValidationError", err)
	}
	got := ve.Locate("a.yaml", []byte(src))
	if want := "a.yaml:8:22: subflow cycle: a → b → a"; got.Error() != want {
		t.Errorf("Locate:\n got %s\nwant %s", got, want)
	}
	if ve.File != "" || ve.Problems[0].Line != 0 {
		t.Errorf("Locate changed the error it was called on: %+v", ve)
	}
	if got := ve.Locate("a.yaml", []byte("{{{ not yaml")); got.Error() != "a.yaml: subflow cycle: a → b → a" {
		t.Errorf("Locate in a file that does not parse: %s", got)
	}
}

func ExampleCheckSubflows() {
	parent := New("parent")
	parent.Node("call", SubflowType).WithArgs(map[string]any{"workflow": "child"})
	child := New("child")
	child.Node("back", SubflowType).WithArgs(map[string]any{"workflow": "parent"})

	lookup := func(name string) (*Workflow, error) {
		if name == "child" {
			return child, nil
		}
		return nil, ErrUnknownWorkflow
	}
	fmt.Println(CheckSubflows(parent, lookup))
	// Output: $.nodes[0].with.workflow: subflow cycle: parent → child → parent
}

func TestValidationErrorLocateNodesMapping(t *testing.T) {
	t.Parallel()
	src := "name: a\nnodes:\n  start: {type: noop}\n  call:\n    type: workflow\n    needs: [start]\n    with: {workflow: a}\n"
	a, err := Parse("a.yaml", []byte(src), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ve *ValidationError
	if err := CheckSubflows(a, registry()); !errors.As(err, &ve) {
		t.Fatalf("CheckSubflows: %v; want a *ValidationError", err)
	}
	if got, want := ve.Locate("a.yaml", []byte(src)).Error(), "a.yaml:7:22: subflow cycle: a → a"; got != want {
		t.Errorf("Locate:\n got %s\nwant %s", got, want)
	}
}
