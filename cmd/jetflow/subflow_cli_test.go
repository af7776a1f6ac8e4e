package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// subflowDef is a definition named name whose node "call" (line 6) runs child as a subflow.
func subflowDef(t *testing.T, dir, name, child string) string {
	t.Helper()
	src := "name: " + name + "\nnodes:\n  - name: start\n    type: noop\n  - name: call\n    type: workflow\n    needs: [start]\n    with: {workflow: " + child + "}\n"
	f := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWorkflowsApplySubflows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	a, b := subflowDef(t, dir, "a", "b"), subflowDef(t, dir, "b", "a")

	// A cycle across two files applied together: exit 2, one line at a's subflow node, and
	// nothing applied.
	r := e.cli("workflows", "apply", a, b)
	if r.code != exitUsage {
		t.Fatalf("apply a cycle: want exit 2, got %s", r)
	}
	if want := "jetflow: " + a + ":8:22: subflow cycle: a → b → a"; r.msg() != want || strings.ContainsAny(r.err.Error(), "\n\r") {
		t.Errorf("apply a cycle:\n got %q\nwant %q", r.err.Error(), want)
	}
	if r := e.cli("workflows", "ls"); r.code != 0 || len(lines(r.stdout)) != 1 {
		t.Errorf("after a refused apply, want only the header of workflows ls: %s", r)
	}
	if r := e.cli("workflows", "validate", a, b); r.code != exitUsage || !strings.Contains(r.msg(), "subflow cycle: a → b → a") {
		t.Errorf("validate a cycle: want exit 2 and the cycle, got %s", r)
	}

	// A subflow of a workflow that does not exist: validate lets it be, apply refuses it.
	lone := subflowDef(t, t.TempDir(), "lone", "nope")
	if r := e.cli("workflows", "validate", lone); r.code != 0 {
		t.Errorf("validate a subflow of an unknown workflow: want exit 0, got %s", r)
	}
	r = e.cli("workflows", "apply", lone)
	if want := "jetflow: " + lone + ":8:22: unknown workflow nope: apply it first or in the same command"; r.code != exitUsage || r.msg() != want {
		t.Errorf("apply a subflow of an unknown workflow: want exit 2 and %q, got %s", want, r)
	}

	// Applied together, the child is stored first, whatever the order of the files.
	dir2 := t.TempDir()
	parent, child := subflowDef(t, dir2, "parent", "child"), filepath.Join(dir2, "child.yaml")
	if err := os.WriteFile(child, []byte("name: child\nnodes:\n  - name: only\n    type: noop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = e.cli("workflows", "apply", parent, child)
	if got := lines(r.stdout); r.code != 0 || len(got) != 2 || !strings.HasPrefix(got[0], "applied child ") || !strings.HasPrefix(got[1], "applied parent ") {
		t.Fatalf("apply parent and child: want child applied first, got %s", r)
	}

	// The registry is the lookup for workflows not in the command: a cycle through it is
	// refused, a child in it is found.
	back := subflowDef(t, t.TempDir(), "child", "parent")
	if r := e.cli("workflows", "apply", back); r.code != exitUsage || !strings.Contains(r.msg(), back+":8:22: subflow cycle: child → parent → child") {
		t.Errorf("apply a cycle through the registry: want exit 2 and the cycle, got %s", r)
	}
	if r := e.cli("workflows", "apply", parent); r.code != 0 {
		t.Errorf("apply parent with its child registered: %s", r)
	}
}
