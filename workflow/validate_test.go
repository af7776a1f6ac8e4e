package workflow

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// chain returns a valid workflow of n noop nodes, each needing the one before.
func chain(n int) *Workflow {
	w := New("chain")
	for i := range n {
		if i == 0 {
			w.Node("n0", "noop")
			continue
		}
		w.Node(fmt.Sprintf("n%d", i), "noop", fmt.Sprintf("n%d", i-1))
	}
	return w
}

// one returns a workflow of the single node n.
func one(n *Node) *Workflow { return &Workflow{Name: "wf", Nodes: []*Node{n}} }

func TestValidate(t *testing.T) {
	t.Parallel()
	knows := func(types ...string) ValidateOptions {
		return ValidateOptions{KnownType: func(typ string) bool {
			for _, k := range types {
				if k == typ {
					return true
				}
			}
			return false
		}}
	}
	tests := []struct {
		name string
		w    *Workflow
		opts ValidateOptions
		want string // the whole Error(); empty means valid
		path string // the first problem's path
	}{
		{name: "diamond", w: func() *Workflow {
			w := New("diamond")
			w.Node("a", "noop")
			w.Node("b", "noop", "a")
			w.Node("c", "noop", "a")
			w.Node("d", "noop", "b", "c")
			return w
		}()},
		{name: "custom type without registry", w: one(&Node{Name: "a", Type: "charge-card"})},
		{name: "custom type in registry", w: one(&Node{Name: "a", Type: "charge-card"}), opts: knows("charge-card")},
		{name: "zero retry in Go means defaults", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{}})},
		{name: "full retry", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{MaxAttempts: 100, Initial: Duration(time.Second), Max: Duration(time.Second), Multiplier: 100, Jitter: ptr(0.0)}})},
		{name: "jitter one", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: 1, Jitter: ptr(1.0)}})},
		{name: "max_crashes 15", w: one(&Node{Name: "a", Type: "noop", MaxCrashes: 15})},
		{name: "concurrency", w: one(&Node{Name: "a", Type: "noop", Concurrency: 8})},
		{name: "exec command list", w: one(&Node{Name: "a", Type: "exec", With: map[string]any{"command": []any{"echo", "hi"}, "env": map[string]any{}, "dir": "/", "permanent_exit_codes": []any{2}}})},
		{name: "sleep", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": "1h30m"}})},
		{name: "noop output", w: one(&Node{Name: "a", Type: "noop", With: map[string]any{"output": map[string]any{"x": 1}}})},
		{name: "http", w: one(&Node{Name: "a", Type: "http", With: map[string]any{"method": "GET", "url": "https://example.com", "headers": map[string]any{}, "body": "", "timeout": "5s", "expect_status": []any{200}}})},
		{name: "names of 128 characters", w: one(&Node{Name: strings.Repeat("n", 128), Type: strings.Repeat("t", 128)})},

		{name: "no name", w: &Workflow{Nodes: []*Node{{Name: "a", Type: "noop"}}},
			want: "$.name: the workflow has no name: add `name: <name>`", path: "$.name"},
		{name: "bad workflow name", w: &Workflow{Name: "my flow", Nodes: []*Node{{Name: "a", Type: "noop"}}},
			want: `$.name: workflow name "my flow": use letters, digits, '_' and '-' only`, path: "$.name"},
		{name: "no nodes", w: New("empty"),
			want: "$.nodes: the workflow has no nodes", path: "$.nodes"},
		{name: "nil node", w: &Workflow{Name: "wf", Nodes: []*Node{nil}},
			want: "$.nodes[0]: node 0 is empty", path: "$.nodes[0]"},
		{name: "cycle of three", w: func() *Workflow {
			w := New("wf")
			w.Node("a", "noop", "c")
			w.Node("b", "noop", "a")
			w.Node("c", "noop", "b")
			return w
		}(), want: "$.nodes[0].needs: cycle: a → b → c → a", path: "$.nodes[0].needs"},
		{name: "cycle of two behind a root", w: func() *Workflow {
			w := New("wf")
			w.Node("root", "noop")
			w.Node("x", "noop", "root", "y")
			w.Node("y", "noop", "x")
			return w
		}(), want: "$.nodes[1].needs: cycle: x → y → x", path: "$.nodes[1].needs"},
		{name: "needs itself", w: one(&Node{Name: "a", Type: "noop", Needs: []string{"a"}}),
			want: `$.nodes[0].needs[0]: node "a" needs itself`, path: "$.nodes[0].needs[0]"},
		{name: "unknown parent", w: func() *Workflow {
			w := New("wf")
			w.Node("a", "noop")
			w.Node("b", "noop", "a", "zz")
			return w
		}(), want: `$.nodes[1].needs[1]: node "b" needs "zz", which is not a node of this workflow`, path: "$.nodes[1].needs[1]"},
		{name: "parent twice", w: func() *Workflow {
			w := New("wf")
			w.Node("a", "noop")
			w.Node("b", "noop", "a", "a")
			return w
		}(), want: `$.nodes[1].needs: node "b" lists a parent twice`, path: "$.nodes[1].needs"},
		{name: "duplicate name", w: func() *Workflow {
			w := New("wf")
			w.Node("a", "noop")
			w.Node("b", "noop")
			w.Node("a", "noop")
			return w
		}(), want: `$.nodes[2].name: duplicate node name "a" (also node 0)`, path: "$.nodes[2].name"},
		{name: "no node name", w: one(&Node{Type: "noop"}), want: "$.nodes[0]: node 0 has no name", path: "$.nodes[0]"},
		{name: "dot in name", w: one(&Node{Name: "a.b", Type: "noop"}),
			want: `$.nodes[0].name: node name "a.b": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "star name", w: one(&Node{Name: "*", Type: "noop"}),
			want: `$.nodes[0].name: node name "*": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "gt name", w: one(&Node{Name: ">", Type: "noop"}),
			want: `$.nodes[0].name: node name ">": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "space in name", w: one(&Node{Name: "a b", Type: "noop"}),
			want: `$.nodes[0].name: node name "a b": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "unicode name", w: one(&Node{Name: "größe", Type: "noop"}),
			want: `$.nodes[0].name: node name "größe": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "newline in name stays one line", w: one(&Node{Name: "a\nb", Type: "noop"}),
			want: `$.nodes[0].name: node name "a\nb": use letters, digits, '_' and '-' only`, path: "$.nodes[0].name"},
		{name: "name too long", w: one(&Node{Name: strings.Repeat("n", 129), Type: "noop"}),
			want: fmt.Sprintf(`$.nodes[0].name: node name %q: use letters, digits, '_' and '-' only`, strings.Repeat("n", 129)), path: "$.nodes[0].name"},
		{name: "no type", w: one(&Node{Name: "a"}), want: `$.nodes[0]: node "a" has no type`, path: "$.nodes[0]"},
		{name: "bad type", w: one(&Node{Name: "a", Type: "x.y"}),
			want: `$.nodes[0].type: node type "x.y": use letters, digits, '_' and '-' only`, path: "$.nodes[0].type"},
		{name: "unknown type", w: one(&Node{Name: "a", Type: "charge-card"}), opts: knows("other"),
			want: `$.nodes[0].type: node "a" has unknown type "charge-card" (built-in: exec, http, llm, noop, service, sleep, wait, workflow)`, path: "$.nodes[0].type"},
		{name: "built-in types need no registry", w: one(&Node{Name: "a", Type: "noop"}), opts: knows()},

		{name: "max_attempts negative", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{MaxAttempts: -1}}),
			want: "$.nodes[0].retry.max_attempts: retry.max_attempts -1: use 1 to 100", path: "$.nodes[0].retry.max_attempts"},
		{name: "max_attempts too many", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{MaxAttempts: 101}}),
			want: "$.nodes[0].retry.max_attempts: retry.max_attempts 101: use 1 to 100", path: "$.nodes[0].retry.max_attempts"},
		{name: "initial negative", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Initial: Duration(-time.Second)}}),
			want: "$.nodes[0].retry.initial: retry.initial must be positive", path: "$.nodes[0].retry.initial"},
		{name: "max negative", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Max: Duration(-time.Second)}}),
			want: "$.nodes[0].retry.max: retry.max must be positive", path: "$.nodes[0].retry.max"},
		{name: "max below initial", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Initial: Duration(time.Minute), Max: Duration(time.Second)}}),
			want: "$.nodes[0].retry.max: retry.max (1s) is below retry.initial (1m0s)", path: "$.nodes[0].retry.max"},
		{name: "multiplier half", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: 0.5}}),
			want: "$.nodes[0].retry.multiplier: retry.multiplier 0.5: use 1 to 100", path: "$.nodes[0].retry.multiplier"},
		{name: "multiplier negative", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: -2}}),
			want: "$.nodes[0].retry.multiplier: retry.multiplier -2: use 1 to 100", path: "$.nodes[0].retry.multiplier"},
		{name: "multiplier too big", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: 101}}),
			want: "$.nodes[0].retry.multiplier: retry.multiplier 101: use 1 to 100", path: "$.nodes[0].retry.multiplier"},
		{name: "multiplier infinite", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: math.Inf(1)}}),
			want: "$.nodes[0].retry.multiplier: retry.multiplier +Inf: use 1 to 100", path: "$.nodes[0].retry.multiplier"},
		{name: "multiplier NaN", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Multiplier: math.NaN()}}),
			want: "$.nodes[0].retry.multiplier: retry.multiplier NaN: use 1 to 100", path: "$.nodes[0].retry.multiplier"},
		{name: "jitter two", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Jitter: ptr(2.0)}}),
			want: "$.nodes[0].retry.jitter: retry.jitter 2: use 0 to 1", path: "$.nodes[0].retry.jitter"},
		{name: "jitter negative", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Jitter: ptr(-0.1)}}),
			want: "$.nodes[0].retry.jitter: retry.jitter -0.1: use 0 to 1", path: "$.nodes[0].retry.jitter"},
		{name: "jitter NaN", w: one(&Node{Name: "a", Type: "noop", Retry: &Retry{Jitter: ptr(math.NaN())}}),
			want: "$.nodes[0].retry.jitter: retry.jitter NaN: use 0 to 1", path: "$.nodes[0].retry.jitter"},
		{name: "timeout negative", w: one(&Node{Name: "a", Type: "noop", Timeout: Duration(-time.Second)}),
			want: "$.nodes[0].timeout: timeout must be positive", path: "$.nodes[0].timeout"},
		{name: "max_crashes 16", w: one(&Node{Name: "a", Type: "noop", MaxCrashes: 16}),
			want: "$.nodes[0].max_crashes: max_crashes 16: use 1 to 15", path: "$.nodes[0].max_crashes"},
		{name: "max_crashes negative", w: one(&Node{Name: "a", Type: "noop", MaxCrashes: -1}),
			want: "$.nodes[0].max_crashes: max_crashes -1: use 1 to 15", path: "$.nodes[0].max_crashes"},
		{name: "concurrency negative", w: one(&Node{Name: "a", Type: "noop", Concurrency: -1}),
			want: "$.nodes[0].concurrency: concurrency -1: use 1 to 100000 (steps of the type in flight across the cluster)", path: "$.nodes[0].concurrency"},
		{name: "two caps for one type", w: &Workflow{Name: "w", Nodes: []*Node{
			{Name: "a", Type: "noop", Concurrency: 3}, {Name: "b", Type: "noop", Concurrency: 4, Needs: []string{"a"}}}},
			want: `$.nodes[1].concurrency: concurrency 4: another node of type "noop" caps it at 3 (the cap is the type's, across the cluster)`, path: "$.nodes[1].concurrency"},

		{name: "exec unknown with key", w: one(&Node{Name: "a", Type: "exec", With: map[string]any{"command": "true", "cmd": "x"}}),
			want: `$.nodes[0].with.cmd: exec node "a": unknown setting "cmd" under with (allowed: command, env, dir, permanent_exit_codes)`, path: "$.nodes[0].with.cmd"},
		{name: "exec without command", w: one(&Node{Name: "a", Type: "exec"}),
			want: `$.nodes[0].with: exec node "a" needs with.command (a shell line or a list of arguments)`, path: "$.nodes[0].with"},
		{name: "exec blank command", w: one(&Node{Name: "a", Type: "exec", With: map[string]any{"command": "  "}}),
			want: `$.nodes[0].with.command: exec node "a": command is empty`, path: "$.nodes[0].with.command"},
		{name: "exec empty command list", w: one(&Node{Name: "a", Type: "exec", With: map[string]any{"command": []any{}}}),
			want: `$.nodes[0].with.command: exec node "a": command is empty`, path: "$.nodes[0].with.command"},
		{name: "exec command of wrong type", w: one(&Node{Name: "a", Type: "exec", With: map[string]any{"command": 7}}),
			want: `$.nodes[0].with.command: exec node "a": command must be a string or a list of strings`, path: "$.nodes[0].with.command"},
		{name: "sleep unknown with key", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": "1s", "for": "2s"}}),
			want: `$.nodes[0].with.for: sleep node "a": unknown setting "for" under with (allowed: duration)`, path: "$.nodes[0].with.for"},
		{name: "sleep without duration", w: one(&Node{Name: "a", Type: "sleep"}),
			want: `$.nodes[0].with: sleep node "a" needs with.duration such as "30s"`, path: "$.nodes[0].with"},
		{name: "sleep duration not a string", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": 30}}),
			want: `$.nodes[0].with: sleep node "a" needs with.duration such as "30s"`, path: "$.nodes[0].with"},
		{name: "sleep bad duration", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": "soon"}}),
			want: `$.nodes[0].with.duration: sleep node "a": duration "soon" must be positive, such as "30s"`, path: "$.nodes[0].with.duration"},
		{name: "sleep zero duration", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": "0s"}}),
			want: `$.nodes[0].with.duration: sleep node "a": duration "0s" must be positive, such as "30s"`, path: "$.nodes[0].with.duration"},
		{name: "sleep negative duration", w: one(&Node{Name: "a", Type: "sleep", With: map[string]any{"duration": "-1m"}}),
			want: `$.nodes[0].with.duration: sleep node "a": duration "-1m" must be positive, such as "30s"`, path: "$.nodes[0].with.duration"},
		{name: "noop unknown with key", w: one(&Node{Name: "a", Type: "noop", With: map[string]any{"out": 1}}),
			want: `$.nodes[0].with.out: noop node "a": unknown setting "out" under with (allowed: output)`, path: "$.nodes[0].with.out"},
		{name: "with holding infinity", w: one(&Node{Name: "a", Type: "noop", With: map[string]any{"output": math.Inf(1)}}),
			want: `$.nodes[0].with: node "a": with cannot be written as JSON (json: unsupported value: +Inf)`, path: "$.nodes[0].with"},
		{name: "custom with holding NaN", w: one(&Node{Name: "a", Type: "mine", With: map[string]any{"x": []any{math.NaN()}}}),
			want: `$.nodes[0].with: node "a": with cannot be written as JSON (json: unsupported value: NaN)`, path: "$.nodes[0].with"},
		{name: "custom types take any with keys", w: one(&Node{Name: "a", Type: "mine", With: map[string]any{"anything": 1}})},

		{name: "several problems", w: &Workflow{Name: "wf", Nodes: []*Node{{Name: "a.b", Type: "noop"}, {Name: "c", Type: "noop", MaxCrashes: 99}, {Name: "d"}}},
			want: `$.nodes[0].name: node name "a.b": use letters, digits, '_' and '-' only (and 2 more problems)`, path: "$.nodes[0].name"},
		{name: "two problems", w: &Workflow{Name: "wf", Nodes: []*Node{{Name: "a.b", Type: "noop"}, {Name: "d"}}},
			want: `$.nodes[0].name: node name "a.b": use letters, digits, '_' and '-' only (and 1 more problem)`, path: "$.nodes[0].name"},

		{name: "10000-node chain", w: chain(MaxNodes)},
		{name: "10001-node chain", w: chain(MaxNodes + 1),
			want: "$.nodes: the workflow has 10001 nodes; at most 10000 are allowed", path: "$.nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.w.Validate(tt.opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			requireOneLine(t, err)
			if got := err.Error(); got != tt.want {
				t.Fatalf("Validate:\n got %s\nwant %s", got, tt.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError", err)
			}
			if got := ve.Problems[0].Path; got != tt.path {
				t.Fatalf("path = %q, want %q", got, tt.path)
			}
			for _, l := range ve.Lines() {
				if strings.ContainsAny(l, "\n\r") {
					t.Fatalf("problem line is not one line: %q", l)
				}
			}
		})
	}
}

func TestValidateCycleMessageNamesEveryNode(t *testing.T) {
	t.Parallel()
	// A long cycle: n0 needs n99, and each other node the one before.
	w := chain(100)
	w.Nodes[0].Needs = []string{"n99"}
	err := w.Validate(ValidateOptions{})
	requireOneLine(t, err)
	var names []string
	for i := range 100 {
		names = append(names, fmt.Sprintf("n%d", i))
	}
	want := "cycle: " + strings.Join(append(names, "n0"), " → ")
	if !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("got %s\nwant it to end with %s", err, want)
	}
}

func TestValidationErrorPlaces(t *testing.T) {
	t.Parallel()
	p := Problem{Path: "$.nodes[0]", Line: 3, Col: 5, Msg: "bad"}
	tests := []struct {
		name string
		e    *ValidationError
		want string
	}{
		{"file and line", &ValidationError{File: "wf.yaml", Problems: []Problem{p}}, "wf.yaml:3:5: bad"},
		{"file only", &ValidationError{File: "wf.yaml", Problems: []Problem{{Path: "$.x", Msg: "bad"}}}, "wf.yaml: bad"},
		{"line only", &ValidationError{Problems: []Problem{p}}, "line 3:5: bad"},
		{"path only", &ValidationError{Problems: []Problem{{Path: "$.x", Msg: "bad"}}}, "$.x: bad"},
		{"nothing", &ValidationError{Problems: []Problem{{Msg: "bad"}}}, "bad"},
		{"no problems", &ValidationError{}, "invalid workflow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.e.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	e := &ValidationError{File: "f", Problems: []Problem{p, {Msg: "worse"}}}
	if got, want := strings.Join(e.Lines(), "|"), "f:3:5: bad|f: worse"; got != want {
		t.Fatalf("Lines() = %q, want %q", got, want)
	}
}

func TestGraph(t *testing.T) {
	t.Parallel()
	w := New("g")
	w.Node("a", "noop")
	w.Node("b", "noop", "a")
	w.Node("c", "noop", "a")
	w.Node("d", "noop", "b", "c")
	w.Node("e", "noop")
	if err := w.Validate(ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	var roots []string
	for _, n := range w.Roots() {
		roots = append(roots, n.Name)
	}
	checks := []struct{ what, got, want string }{
		{"roots", strings.Join(roots, ","), "a,e"},
		{"sinks", strings.Join(w.Sinks(), ","), "d,e"},
		{"children of a", strings.Join(w.Children("a"), ","), "b,c"},
		{"children of d", strings.Join(w.Children("d"), ","), ""},
		{"lookup", w.Lookup("c").Type, "noop"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if w.Lookup("zz") != nil {
		t.Error("Lookup of a missing node is not nil")
	}
	// Adding a node after lookups rebuilds the index.
	w.Node("f", "noop", "d")
	if got := strings.Join(w.Sinks(), ","); got != "e,f" {
		t.Errorf("sinks after adding f = %q, want e,f", got)
	}
}

func TestNodeDefaults(t *testing.T) {
	t.Parallel()
	n := &Node{Name: "a", Type: "noop"}
	if got, want := n.RetryPolicy(), (Policy{5, time.Second, 5 * time.Minute, 2, 1}); got != want {
		t.Errorf("RetryPolicy() = %+v, want %+v", got, want)
	}
	if got := n.TimeoutOrDefault(); got != DefaultTimeout {
		t.Errorf("TimeoutOrDefault() = %v, want %v", got, DefaultTimeout)
	}
	if got := n.MaxCrashesOrDefault(); got != DefaultMaxCrashes {
		t.Errorf("MaxCrashesOrDefault() = %v, want %v", got, DefaultMaxCrashes)
	}
	n.WithRetry(Retry{MaxAttempts: 3, Initial: Duration(time.Millisecond), Jitter: ptr(0.0)}).WithTimeout(time.Second)
	n.MaxCrashes = 7
	if got, want := n.RetryPolicy(), (Policy{3, time.Millisecond, 5 * time.Minute, 2, 0}); got != want {
		t.Errorf("RetryPolicy() = %+v, want %+v", got, want)
	}
	if n.TimeoutOrDefault() != time.Second || n.MaxCrashesOrDefault() != 7 {
		t.Errorf("timeout %v, max crashes %d; want 1s, 7", n.TimeoutOrDefault(), n.MaxCrashesOrDefault())
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	exp := Policy{MaxAttempts: 10, Initial: time.Second, Max: 10 * time.Second, Multiplier: 2, Jitter: 0}
	full := exp
	full.Jitter = 1
	half := exp
	half.Jitter = 0.5
	flat := exp
	flat.Multiplier = 1
	tests := []struct {
		name    string
		p       Policy
		attempt int
		r       float64
		want    time.Duration
	}{
		{"first", exp, 1, 0.7, time.Second},
		{"second doubles", exp, 2, 0.7, 2 * time.Second},
		{"third", exp, 3, 0.7, 4 * time.Second},
		{"fourth", exp, 4, 0.7, 8 * time.Second},
		{"fifth is capped", exp, 5, 0.7, 10 * time.Second},
		{"far past the cap", exp, 50, 0.7, 10 * time.Second},
		{"overflow to infinity is capped", exp, 5000, 0.7, 10 * time.Second},
		{"attempt 0 counts as 1", exp, 0, 0.7, time.Second},
		{"negative attempt counts as 1", exp, -3, 0.7, time.Second},
		{"multiplier 1 is constant", flat, 7, 0.7, time.Second},
		{"full jitter, r=0", full, 3, 0, 0},
		{"full jitter, r=0.25", full, 3, 0.25, time.Second},
		{"full jitter, r=0.5", full, 3, 0.5, 2 * time.Second},
		{"full jitter, r=0.75", full, 3, 0.75, 3 * time.Second},
		{"full jitter, r=1", full, 3, 1, 4 * time.Second},
		{"full jitter, capped", full, 9, 0.5, 5 * time.Second},
		{"half jitter, r=0", half, 3, 0, 2 * time.Second},
		{"half jitter, r=0.5", half, 3, 0.5, 3 * time.Second},
		{"half jitter, r=1", half, 3, 1, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.p.backoff(tt.attempt, tt.r); got != tt.want {
				t.Fatalf("backoff(%d, %v) = %v, want %v", tt.attempt, tt.r, got, tt.want)
			}
		})
	}
}

func TestBackoffStaysInItsRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		p        Policy
		attempt  int
		min, max time.Duration
	}{
		{"defaults, first", (&Node{}).RetryPolicy(), 1, 0, time.Second},
		{"defaults, capped", (&Node{}).RetryPolicy(), 20, 0, DefaultMaxBackoff},
		{"no jitter", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0}, 3, 9 * time.Second, 9 * time.Second},
		{"quarter jitter", Policy{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.25}, 3, 3 * time.Second, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for range 1000 {
				if got := tt.p.Backoff(tt.attempt); got < tt.min || got > tt.max {
					t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.attempt, got, tt.min, tt.max)
				}
			}
		})
	}
}
