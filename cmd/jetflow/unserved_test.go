package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DESIGN.md, "Starting runs": `workflows apply` and `start` warn on stderr (exit 0), naming
// each node type no live worker serves; `runs get` shows a step of such a type that could
// run now as `pending (no live worker for type T)`.
func TestUnservedTypesAreSaid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	def := filepath.Join(t.TempDir(), "orphan.yaml")
	if err := os.WriteFile(def, []byte(`name: orphan
nodes:
  - {name: a, type: noop}
  - {name: b, type: nobody, needs: [a]}
  - {name: c, type: nobody, needs: [b]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.cli("workflows", "apply", def)
	if r.code != 0 {
		t.Fatalf("workflows apply: %s", r)
	}
	for _, want := range []string{
		"warning: no live worker serves node type noop (workflow orphan, node a)",
		"warning: no live worker serves node type nobody (workflow orphan, nodes b, c)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("apply with no worker did not say %q:\n%s", want, r.stderr)
		}
	}

	e.worker()
	var start result
	deadline := time.Now().Add(30 * time.Second)
	for {
		start = e.cli("start", "orphan")
		if start.code != 0 {
			t.Fatalf("start: %s", start)
		}
		if !strings.Contains(start.stderr, "type noop") || time.Now().After(deadline) {
			break // the worker's presence is seen (or the check below fails)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(start.stderr, "type noop") {
		t.Errorf("start warned about noop, which the worker serves:\n%s", start.stderr)
	}
	if want := "warning: no live worker serves node type nobody (workflow orphan, nodes b, c)"; !strings.Contains(start.stderr, want) {
		t.Errorf("start did not say %q:\n%s", want, start.stderr)
	}
	id := lines(start.stdout)[0]

	var v struct {
		Status string `json:"status"`
		Nodes  map[string]struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Reason string `json:"reason"`
		} `json:"nodes"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		g := e.cli("runs", "get", id, "--json")
		if g.code != 0 {
			t.Fatalf("runs get: %s", g)
		}
		if err := json.Unmarshal([]byte(g.stdout), &v); err != nil {
			t.Fatalf("runs get --json: %v\n%s", err, g.stdout)
		}
		if v.Nodes["a"].Status == "done" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a := v.Nodes["a"]; a.Status != "done" || a.Reason != "" {
		t.Fatalf("node a: %+v, want done", a)
	}
	if b := v.Nodes["b"]; b.Type != "nobody" || b.Status != "pending" || b.Reason != "no live worker for type nobody" {
		t.Errorf("node b: %+v, want pending, reason 'no live worker for type nobody'", b)
	}
	if c := v.Nodes["c"]; c.Status != "pending" || c.Reason != "" {
		t.Errorf("node c (its parent not done): %+v, want pending with no reason", c)
	}
	g := e.cli("runs", "get", id)
	if g.code != 0 || !strings.Contains(g.stdout, "pending (no live worker for type nobody)") {
		t.Errorf("runs get does not show b as 'pending (no live worker for type nobody)': %s", g)
	}
}
