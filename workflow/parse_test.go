package workflow

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// node1 is a one-node YAML workflow whose node "a" has the given extra lines (indented by
// four spaces), starting at line 5.
func node1(typ string, extra ...string) string {
	s := "name: wf\nnodes:\n  - name: a\n    type: " + typ + "\n"
	for _, l := range extra {
		s += "    " + l + "\n"
	}
	return s
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		opts ValidateOptions
		want string // the whole Error()
	}{
		{"cycle", "name: wf\nnodes:\n  - name: a\n    type: noop\n    needs: [c]\n  - name: b\n    type: noop\n    needs: [a]\n  - name: c\n    type: noop\n    needs: [b]\n", ValidateOptions{},
			"wf.yaml:5:12: cycle: a → b → c → a"},
		{"unknown needs", node1("noop", "needs: [zz]"), ValidateOptions{},
			`wf.yaml:5:13: node "a" needs "zz", which is not a node of this workflow`},
		{"unknown needs, block list", node1("noop", "needs:", "  - x", "  - zz"), ValidateOptions{},
			`wf.yaml:6:9: node "a" needs "x", which is not a node of this workflow (and 1 more problem)`},
		{"dot in name", "name: wf\nnodes:\n  - name: a.b\n    type: noop\n", ValidateOptions{},
			`wf.yaml:3:11: node name "a.b": use letters, digits, '_' and '-' only`},
		{"star name", "name: wf\nnodes:\n  - name: '*'\n    type: noop\n", ValidateOptions{},
			`wf.yaml:3:11: node name "*": use letters, digits, '_' and '-' only`},
		{"gt name", "name: wf\nnodes:\n  - name: '>'\n    type: noop\n", ValidateOptions{},
			`wf.yaml:3:11: node name ">": use letters, digits, '_' and '-' only`},
		{"space in name", "name: wf\nnodes:\n  - name: a b\n    type: noop\n", ValidateOptions{},
			`wf.yaml:3:11: node name "a b": use letters, digits, '_' and '-' only`},
		{"unicode name", "name: wf\nnodes:\n  - name: größe\n    type: noop\n", ValidateOptions{},
			`wf.yaml:3:11: node name "größe": use letters, digits, '_' and '-' only`},
		{"bad workflow name", "name: my.wf\nnodes:\n  - name: a\n    type: noop\n", ValidateOptions{},
			`wf.yaml:1:7: workflow name "my.wf": use letters, digits, '_' and '-' only`},
		{"no workflow name", "nodes:\n  - name: a\n    type: noop\n", ValidateOptions{},
			"wf.yaml: the workflow has no name: add `name: <name>`"},
		{"duplicate", "name: wf\nnodes:\n  - name: a\n    type: noop\n  - name: a\n    type: noop\n", ValidateOptions{},
			`wf.yaml:5:11: duplicate node name "a" (also node 0)`},
		{"max_attempts 0", node1("noop", "retry:", "  max_attempts: 0"), ValidateOptions{},
			"wf.yaml:6:21: retry.max_attempts must be positive (got 0)"},
		{"max_attempts negative", node1("noop", "retry:", "  max_attempts: -1"), ValidateOptions{},
			"wf.yaml:6:21: retry.max_attempts must be positive (got -1) (and 1 more problem)"},
		{"initial 0s", node1("noop", "retry:", "  initial: 0s"), ValidateOptions{},
			"wf.yaml:6:16: retry.initial must be positive (got 0s)"},
		{"initial 0", node1("noop", "retry:", "  initial: 0"), ValidateOptions{},
			"wf.yaml:6:16: retry.initial must be positive (got 0)"},
		{"max 0ms", node1("noop", "retry:", "  max: 0ms"), ValidateOptions{},
			"wf.yaml:6:12: retry.max must be positive (got 0ms)"},
		{"multiplier 0", node1("noop", "retry:", "  multiplier: 0"), ValidateOptions{},
			"wf.yaml:6:19: retry.multiplier must be positive (got 0)"},
		{"multiplier 0.5", node1("noop", "retry:", "  multiplier: 0.5"), ValidateOptions{},
			"wf.yaml:6:19: retry.multiplier 0.5: use 1 to 100"},
		{"multiplier NaN", node1("noop", "retry:", "  multiplier: .nan"), ValidateOptions{},
			"wf.yaml:6:19: retry.multiplier NaN: use 1 to 100"},
		{"jitter 2", node1("noop", "retry:", "  jitter: 2"), ValidateOptions{},
			"wf.yaml:6:15: retry.jitter 2: use 0 to 1"},
		{"jitter NaN", node1("noop", "retry:", "  jitter: .nan"), ValidateOptions{},
			"wf.yaml:6:15: retry.jitter NaN: use 0 to 1"},
		{"with holding .inf", node1("noop", "with:", "  output: .inf"), ValidateOptions{},
			`wf.yaml:6:13: node "a": with cannot be written as JSON (json: unsupported value: +Inf)`},
		{"timeout negative", node1("noop", "timeout: -5s"), ValidateOptions{},
			"wf.yaml:5:14: timeout must be positive"},
		{"exec unknown with key", node1("exec", "with:", "  command: 'true'", "  cmd: x"), ValidateOptions{},
			`wf.yaml:7:12: exec node "a": unknown setting "cmd" under with (allowed: command, env, dir, permanent_exit_codes)`},
		{"exec without command", node1("exec", "with:", "  dir: /tmp"), ValidateOptions{},
			`wf.yaml:6:10: exec node "a" needs with.command (a shell line or a list of arguments)`},
		{"exec without with", node1("exec"), ValidateOptions{},
			`wf.yaml:3:9: exec node "a" needs with.command (a shell line or a list of arguments)`},
		{"sleep bad duration", node1("sleep", "with:", "  duration: soon"), ValidateOptions{},
			`wf.yaml:6:17: sleep node "a": duration "soon" must be positive, such as "30s"`},
		{"noop unknown with key", node1("noop", "with:", "  outptu: 1"), ValidateOptions{},
			`wf.yaml:6:15: noop node "a": unknown setting "outptu" under with (allowed: output)`},
		{"unknown type", node1("charge"), ValidateOptions{KnownType: func(string) bool { return false }},
			`wf.yaml:4:11: node "a" has unknown type "charge" (built-in: exec, http, llm, noop, service, sleep, wait, workflow)`},
		{"unknown node field", node1("noop", "bogus: 1"), ValidateOptions{},
			`wf.yaml:5:5: unknown field "bogus" (check the spelling; see the README for the fields a node takes)`},
		{"unknown retry field", node1("noop", "retry:", "  attempts: 3"), ValidateOptions{},
			`wf.yaml:6:7: unknown field "attempts" (check the spelling; see the README for the fields a node takes)`},
		{"unknown top-level field", "name: wf\nversion: 2\nnodes:\n  - name: a\n    type: noop\n", ValidateOptions{},
			`wf.yaml:2:1: unknown field "version" (check the spelling; see the README for the fields a node takes)`},
		{"broken YAML", node1("noop", "needs: [a", "   bad: ["), ValidateOptions{}, ""},
		{"bad indentation", "name: wf\nnodes:\n  - name: a\n    type: noop\n   bad: [\n", ValidateOptions{},
			"wf.yaml:5:4: value is not allowed in this context"},
		{"tab indentation", "name: wf\nnodes:\n\t- name: a\n", ValidateOptions{}, ""},
		{"empty file", "", ValidateOptions{}, "wf.yaml: the file is empty"},
		{"blank file", " \n\t\n", ValidateOptions{}, "wf.yaml: the file is empty"},
		{"only a comment", "# nothing\n", ValidateOptions{}, ""},
		{"nodes is an empty map", "name: wf\nnodes: {}\n", ValidateOptions{}, "wf.yaml:2:8: the workflow has no nodes"},
		{"top level is a list", "- a\n- b\n", ValidateOptions{}, "wf.yaml:1:1: sequence was used where mapping is expected"},
		{"null node", "name: wf\nnodes:\n  - null\n", ValidateOptions{}, "wf.yaml:3:5: node 0 is empty"},
		{"no nodes", "name: wf\nnodes: []\n", ValidateOptions{}, "wf.yaml:2:8: the workflow has no nodes"},
		{"bad duration", node1("noop", "timeout: soon"), ValidateOptions{}, ""},
		{"JSON zero max_attempts", `{"name":"wf","nodes":[{"name":"a","type":"noop","retry":{"max_attempts":0}}]}`, ValidateOptions{},
			"wf.yaml:1:73: retry.max_attempts must be positive (got 0)"},
		{"JSON unknown needs", "{\"name\": \"wf\",\n \"nodes\": [\n  {\"name\": \"a\", \"type\": \"noop\", \"needs\": [\"zz\"]}\n ]}", ValidateOptions{},
			`wf.yaml:3:43: node "a" needs "zz", which is not a node of this workflow`},
		{"JSON broken", `{"name": "wf", "nodes": [`, ValidateOptions{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := Parse("wf.yaml", []byte(tt.src), tt.opts)
			if w != nil {
				t.Errorf("Parse returned a workflow with its error")
			}
			requireOneLine(t, err)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			if ve.File != "wf.yaml" {
				t.Errorf("File = %q, want wf.yaml", ve.File)
			}
			if !strings.HasPrefix(err.Error(), "wf.yaml") {
				t.Errorf("error does not start with the file name: %s", err)
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Fatalf("Parse:\n got %s\nwant %s", err, tt.want)
			}
			for _, l := range ve.Lines() {
				if strings.ContainsAny(l, "\n\r") {
					t.Fatalf("problem is not one line: %q", l)
				}
			}
		})
	}
}

// TestParseErrorsCarryPositions checks that syntax errors point into the file.
func TestParseErrorsCarryPositions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		src       string
		line, col int
	}{
		{"unclosed flow list", "name: wf\nnodes:\n  - name: a\n    type: noop\n    needs: [a\n", 5, 0},
		{"tab", "name: wf\nnodes:\n\t- name: a\n", 3, 0},
		{"unknown field", node1("noop", "bogus: 1"), 5, 5},
		{"JSON broken", `{"name": "wf", "nodes": [`, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("wf.yaml", []byte(tt.src), ValidateOptions{})
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			p := ve.Problems[0]
			if p.Line != tt.line || (tt.col != 0 && p.Col != tt.col) || p.Col == 0 {
				t.Fatalf("position %d:%d, want %d:%d (%v)", p.Line, p.Col, tt.line, tt.col, err)
			}
			if want := fmt.Sprintf("wf.yaml:%d:%d: ", p.Line, p.Col); !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q does not start with %q", err, want)
			}
		})
	}
}

func TestParseTooBig(t *testing.T) {
	t.Parallel()
	src := "name: wf\n# " + strings.Repeat("x", MaxDefinitionBytes) + "\n"
	_, err := Parse("big.yaml", []byte(src), ValidateOptions{})
	requireOneLine(t, err)
	want := fmt.Sprintf("big.yaml: definition is %d bytes; at most %d are allowed", len(src), MaxDefinitionBytes)
	if err.Error() != want {
		t.Fatalf("got %s\nwant %s", err, want)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	src := `
name: orders
description: Charge, then ship.
nodes:
  - name: charge
    type: http
    with:
      method: POST
      url: "https://pay.example/${{ input.order_id }}"
    retry:
      max_attempts: 3
      initial: 500ms
      max: 1m
      multiplier: 3
      jitter: 0
    timeout: 30s
    max_crashes: 2
  - name: ship
    type: exec
    needs: [charge]
    with:
      command: [ship, --fast]
  - name: wait
    type: sleep
    needs: [charge]
    timeout: 90
    with: {duration: 1h}
`
	w, err := Parse("orders.yaml", []byte(src), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "orders" || w.Description != "Charge, then ship." || len(w.Nodes) != 3 {
		t.Fatalf("parsed %+v", w)
	}
	charge := w.Lookup("charge")
	if got, want := charge.RetryPolicy(), (Policy{3, 500 * time.Millisecond, time.Minute, 3, 0}); got != want {
		t.Errorf("retry = %+v, want %+v", got, want)
	}
	if charge.TimeoutOrDefault() != 30*time.Second || charge.MaxCrashesOrDefault() != 2 {
		t.Errorf("timeout %v, max_crashes %d", charge.TimeoutOrDefault(), charge.MaxCrashesOrDefault())
	}
	if got := charge.With["url"]; got != "https://pay.example/${{ input.order_id }}" {
		t.Errorf("with.url = %v", got)
	}
	if got := fmt.Sprint(w.Lookup("ship").With["command"]); got != "[ship --fast]" {
		t.Errorf("ship command = %s", got)
	}
	if got := w.Lookup("wait").TimeoutOrDefault(); got != 90*time.Second {
		t.Errorf("timeout in seconds = %v, want 1m30s", got)
	}
	if got := strings.Join(w.Children("charge"), ","); got != "ship,wait" {
		t.Errorf("children of charge = %s", got)
	}
}

func TestParseJSON(t *testing.T) {
	t.Parallel()
	src := `{"name": "wf", "nodes": [
		{"name": "a", "type": "noop", "with": {"output": {"n": 1}}},
		{"name": "b", "type": "exec", "needs": ["a"], "with": {"command": "cat"}, "retry": {"initial": "2s", "jitter": 0.5}}
	]}`
	w, err := Parse("wf.json", []byte(src), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := w.Lookup("b")
	if b == nil || b.Needs[0] != "a" || b.With["command"] != "cat" {
		t.Fatalf("node b = %+v", b)
	}
	if got := b.RetryPolicy(); got.Initial != 2*time.Second || got.Jitter != 0.5 {
		t.Errorf("retry = %+v", got)
	}
}

// TestParseLargeChain parses a 10,000-node chain written as JSON. (TestValidate refuses
// 10,001; parsing one more node would only double this test's time.)
func TestParseLargeChain(t *testing.T) {
	t.Parallel()
	b, err := chain(MaxNodes).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	w, err := Parse("chain.json", b, ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Nodes) != MaxNodes || len(w.Roots()) != 1 || len(w.Sinks()) != 1 {
		t.Fatalf("parsed %d nodes, %d roots, sinks %v", len(w.Nodes), len(w.Roots()), w.Sinks())
	}
	if got := w.Children("n9998"); len(got) != 1 || got[0] != "n9999" {
		t.Fatalf("children of n9998 = %v", got)
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	yamlSrc := `
name: wf
nodes:
  - name: a
    type: noop
    with:
      output: {n: 1, s: "x", list: [1, 2.5, true, null]}
  - name: b
    type: exec
    needs: [a]
    with:
      command: [echo, hi]
    retry: {max_attempts: 3, initial: 2s, jitter: 0}
    timeout: 1m
`
	jsonSrc := `{"nodes": [
	  {"type": "noop", "name": "a", "with": {"output": {"s": "x", "list": [1, 2.5, true, null], "n": 1}}},
	  {"name": "b", "type": "exec", "needs": ["a"], "timeout": "60s",
	   "retry": {"jitter": 0, "initial": "2000ms", "max_attempts": 3}, "with": {"command": ["echo", "hi"]}}
	], "name": "wf"}`
	built := func() *Workflow {
		w := New("wf")
		w.Node("a", "noop").WithArgs(map[string]any{"output": map[string]any{"n": 1, "s": "x", "list": []any{1, 2.5, true, nil}}})
		w.Node("b", "exec", "a").WithArgs(map[string]any{"command": []string{"echo", "hi"}}).
			WithRetry(Retry{MaxAttempts: 3, Initial: Duration(2 * time.Second), Jitter: ptr(0.0)}).WithTimeout(time.Minute)
		return w
	}
	hash := func(t *testing.T, w *Workflow) string {
		t.Helper()
		h, err := w.Hash()
		if err != nil {
			t.Fatal(err)
		}
		if !validHash(h) {
			t.Fatalf("hash %q is not 64 hex digits", h)
		}
		return h
	}
	parse := func(t *testing.T, src string) *Workflow {
		t.Helper()
		w, err := Parse("wf", []byte(src), ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	base := hash(t, parse(t, yamlSrc))
	if h := hash(t, parse(t, yamlSrc)); h != base {
		t.Errorf("the same YAML hashed twice: %s, %s", base, h)
	}
	if h := hash(t, parse(t, jsonSrc)); h != base {
		t.Errorf("equivalent JSON: %s, YAML: %s", h, base)
	}
	if h := hash(t, built()); h != base {
		t.Errorf("equivalent Go: %s, YAML: %s", h, base)
	}
	canon, err := parse(t, yamlSrc).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if h := hash(t, parse(t, string(canon))); h != base {
		t.Errorf("re-parsed canonical JSON: %s, YAML: %s", h, base)
	}

	changes := []struct {
		name   string
		change func(w *Workflow)
	}{
		{"name", func(w *Workflow) { w.Name = "wf2" }},
		{"description", func(w *Workflow) { w.Description = "d" }},
		{"with value", func(w *Workflow) { w.Nodes[1].With["command"] = []any{"echo", "ho"} }},
		{"with key added", func(w *Workflow) { w.Nodes[1].With["dir"] = "/" }},
		{"needs", func(w *Workflow) { w.Nodes[1].Needs = nil }},
		{"type", func(w *Workflow) { w.Nodes[0].Type = "mine" }},
		{"retry", func(w *Workflow) { w.Nodes[1].Retry.MaxAttempts = 4 }},
		{"jitter left out", func(w *Workflow) { w.Nodes[1].Retry.Jitter = nil }},
		{"timeout", func(w *Workflow) { w.Nodes[1].Timeout = Duration(time.Second) }},
		{"max_crashes", func(w *Workflow) { w.Nodes[1].MaxCrashes = 2 }},
		{"node order", func(w *Workflow) { w.Nodes[0], w.Nodes[1] = w.Nodes[1], w.Nodes[0] }},
	}
	seen := map[string]string{base: "base"}
	for _, c := range changes {
		w := parse(t, yamlSrc)
		c.change(w)
		h := hash(t, w)
		if other, dup := seen[h]; dup {
			t.Errorf("changing %s gives the hash of %s", c.name, other)
		}
		seen[h] = c.name
	}
}

func TestHashRefusesNaN(t *testing.T) {
	t.Parallel()
	w := one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: math.NaN()}})
	if _, err := w.Hash(); err == nil {
		t.Fatal("Hash of a NaN setting: want an error")
	}
	if err := w.Validate(ValidateOptions{}); err == nil {
		t.Fatal("Validate of a NaN setting: want an error")
	}
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{`"30s"`, 30 * time.Second, ""},
		{`"1h2m"`, time.Hour + 2*time.Minute, ""},
		{`1.5`, 1500 * time.Millisecond, ""},
		{`0`, 0, ""},
		{`"soon"`, 0, `bad duration "soon": use a number and a unit such as "30s" or "5m"`},
		{`true`, 0, `duration must be a string such as "30s"`},
		{`1e300`, 0, "duration 1e+300 seconds is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			var d Duration
			err := d.UnmarshalJSON([]byte(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil || d.D() != tt.want {
				t.Fatalf("got %v, %v; want %v", d.D(), err, tt.want)
			}
			b, err := d.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := back.UnmarshalJSON(b); err != nil || back != d {
				t.Fatalf("round trip of %s: %v, %v", b, back.D(), err)
			}
		})
	}
}

// TestParseDoesNotPanic holds inputs on which the YAML library panics (found by FuzzParse):
// Parse must turn them into a one-line *ValidationError.
func TestParseDoesNotPanic(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		"name: wf\nnodes: !x\n",
		"nodes:\n  - needs: !x\n",
		"nodes:\n  - name:\n  - needs: !00\n000000000000000",
	} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			w, err := Parse("wf.yaml", []byte(src), ValidateOptions{})
			if w != nil {
				t.Fatal("Parse returned a workflow")
			}
			requireOneLine(t, err)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			if want := "wf.yaml: the YAML parser failed on this file"; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("got %s, want it to start with %q", err, want)
			}
		})
	}
}
