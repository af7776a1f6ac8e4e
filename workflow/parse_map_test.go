package workflow

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// TestParseMapSameAsList checks that nodes written as a mapping keyed by node name parse to
// the workflow the list form gives: same canonical JSON, same hash.
func TestParseMapSameAsList(t *testing.T) {
	t.Parallel()
	const listYAML = `
name: wf
nodes:
  - name: fetch
    type: http
    with: {method: GET, url: "https://example.com/${{ input.id }}"}
    retry: {max_attempts: 3, initial: 2s, jitter: 0}
    timeout: 30s
  - name: store
    type: exec
    needs: [fetch]
    with:
      command: [store, --fast]
  - name: done
    type: noop
    needs: [store, fetch]
`
	tests := []struct {
		name         string
		list, mapped string
	}{
		{"YAML block", listYAML, `
name: wf
nodes:
  fetch:
    type: http
    with: {method: GET, url: "https://example.com/${{ input.id }}"}
    retry: {max_attempts: 3, initial: 2s, jitter: 0}
    timeout: 30s
  store:
    type: exec
    needs: [fetch]
    with:
      command: [store, --fast]
  done:
    type: noop
    needs: [store, fetch]
`},
		{"YAML flow", listYAML, `
name: wf
nodes: {fetch: {type: http, with: {method: GET, url: "https://example.com/${{ input.id }}"}, retry: {max_attempts: 3, initial: 2s, jitter: 0}, timeout: 30s},
  store: {type: exec, needs: [fetch], with: {command: [store, --fast]}}, done: {type: noop, needs: [store, fetch]}}
`},
		{"JSON", `{"name": "wf", "nodes": [
		  {"name": "fetch", "type": "http", "with": {"method": "GET", "url": "https://example.com/${{ input.id }}"},
		   "retry": {"max_attempts": 3, "initial": "2s", "jitter": 0}, "timeout": "30s"},
		  {"name": "store", "type": "exec", "needs": ["fetch"], "with": {"command": ["store", "--fast"]}},
		  {"name": "done", "type": "noop", "needs": ["store", "fetch"]}]}`,
			`{"name": "wf", "nodes": {
		  "fetch": {"type": "http", "with": {"method": "GET", "url": "https://example.com/${{ input.id }}"},
		   "retry": {"max_attempts": 3, "initial": "2s", "jitter": 0}, "timeout": "30s"},
		  "store": {"type": "exec", "needs": ["fetch"], "with": {"command": ["store", "--fast"]}},
		  "done": {"type": "noop", "needs": ["store", "fetch"]}}}`},
		{"JSON map, YAML list", listYAML, `{"nodes": {
		  "fetch": {"timeout": "30s", "type": "http", "retry": {"jitter": 0, "initial": "2000ms", "max_attempts": 3},
		   "with": {"url": "https://example.com/${{ input.id }}", "method": "GET"}},
		  "store": {"with": {"command": ["store", "--fast"]}, "needs": ["fetch"], "type": "exec"},
		  "done": {"type": "noop", "needs": ["store", "fetch"]}}, "name": "wf"}`},
		{"name repeated in the value", listYAML, `
name: wf
nodes:
  fetch:
    name: fetch
    type: http
    with: {method: GET, url: "https://example.com/${{ input.id }}"}
    retry: {max_attempts: 3, initial: 2s, jitter: 0}
    timeout: 30s
  store: {type: exec, name: store, needs: [fetch], with: {command: [store, --fast]}}
  "done": {"name": "done", type: noop, needs: [store, fetch]}
`},
		{"anchor, alias and merge",
			"name: wf\nnodes:\n  - {name: a, type: noop, retry: {max_attempts: 2}}\n  - {name: b, type: noop, retry: {max_attempts: 2}}\n" +
				"  - {name: c, type: noop, retry: {max_attempts: 2}, needs: [a, b]}\n",
			"name: wf\nnodes:\n  a: &base {type: noop, retry: {max_attempts: 2}}\n  b: *base\n  c: {<<: *base, needs: [a, b]}\n"},
		{"tagged mapping", "name: wf\nnodes:\n  - {name: a, type: noop}\n", "name: wf\nnodes:\n  a: !!map {type: noop}\n"},
		{"number as a key", "name: wf\nnodes:\n  - {name: '1', type: noop}\n  - {name: '007', type: noop, needs: ['1']}\n",
			"name: wf\nnodes:\n  1: {type: noop}\n  007: {type: noop, needs: ['1']}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := Parse("list.yaml", []byte(tt.list), ValidateOptions{})
			if err != nil {
				t.Fatalf("list form: %v", err)
			}
			got, err := Parse("map.yaml", []byte(tt.mapped), ValidateOptions{})
			if err != nil {
				t.Fatalf("map form: %v", err)
			}
			wantJSON, err := want.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			gotJSON, err := got.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Fatalf("canonical JSON differs:\n map %s\nlist %s", gotJSON, wantJSON)
			}
			wantHash, err := want.Hash()
			if err != nil {
				t.Fatal(err)
			}
			if gotHash, err := got.Hash(); err != nil || gotHash != wantHash {
				t.Fatalf("hash of the map form %s (%v), of the list form %s", gotHash, err, wantHash)
			}
		})
	}
}

// TestParseMapKeyOrder checks that the nodes come out in the order their keys are written,
// not sorted.
func TestParseMapKeyOrder(t *testing.T) {
	t.Parallel()
	want := []string{"zeta", "alpha", "mid", "beta"}
	tests := []struct {
		name, src string
	}{
		{"YAML block", "name: wf\nnodes:\n  zeta:\n    type: noop\n  alpha:\n    type: noop\n    needs: [zeta]\n  mid:\n    type: noop\n  beta:\n    type: noop\n"},
		{"YAML flow", "name: wf\nnodes: {zeta: {type: noop}, alpha: {type: noop, needs: [zeta]}, mid: {type: noop}, beta: {type: noop}}\n"},
		{"JSON", `{"name": "wf", "nodes": {"zeta": {"type": "noop"}, "alpha": {"type": "noop", "needs": ["zeta"]}, "mid": {"type": "noop"}, "beta": {"type": "noop"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := Parse("wf.yaml", []byte(tt.src), ValidateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range w.Nodes {
				got = append(got, n.Name)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("nodes %v, want %v", got, want)
			}
			if w.Lookup("alpha").Needs[0] != "zeta" {
				t.Fatalf("alpha needs %v", w.Lookup("alpha").Needs)
			}
		})
	}
}

// TestParseMapProblems checks what Parse says about definitions with nodes as a mapping, and
// that it places each problem in the mapping (file:line:col).
func TestParseMapProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want string // the whole Error()
	}{
		{"max_attempts 0", "name: wf\nnodes:\n  fetch:\n    type: noop\n    retry:\n      max_attempts: 0\n",
			"wf.yaml:6:21: retry.max_attempts must be positive (got 0)"},
		{"multiplier of the second node", "name: wf\nnodes:\n  a: {type: noop}\n  b:\n    type: noop\n    retry: {multiplier: 0.5}\n",
			"wf.yaml:6:25: retry.multiplier 0.5: use 1 to 100"},
		{"unknown needs", "name: wf\nnodes:\n  fetch:\n    type: noop\n    needs: [zz]\n",
			`wf.yaml:5:13: node "fetch" needs "zz", which is not a node of this workflow`},
		{"cycle", "name: wf\nnodes:\n  a: {type: noop, needs: [b]}\n  b: {type: noop, needs: [a]}\n",
			"wf.yaml:3:26: cycle: a → b → a"},
		{"no type", "name: wf\nnodes:\n  a: {type: noop}\n  fetch:\n    retry: {max_attempts: 2}\n",
			`wf.yaml:4:3: node "fetch" has no type`},
		{"null value", "name: wf\nnodes:\n  fetch:\n",
			`wf.yaml:3:3: node "fetch" has no type`},
		{"exec without with", "name: wf\nnodes:\n  run: {type: exec}\n",
			`wf.yaml:3:3: exec node "run" needs with.command (a shell line or a list of arguments)`},
		{"bad name", "name: wf\nnodes:\n  a.b: {type: noop}\n",
			`wf.yaml:3:3: node name "a.b": use letters, digits, '_' and '-' only`},
		{"unknown field", "name: wf\nnodes:\n  fetch:\n    type: noop\n    bogus: 1\n",
			`wf.yaml:5:5: unknown field "bogus" (check the spelling; see the README for the fields a node takes)`},
		{"JSON max_attempts 0", `{"name": "wf", "nodes": {"a": {"type": "noop", "retry": {"max_attempts": 0}}}}`,
			"wf.yaml:1:74: retry.max_attempts must be positive (got 0)"},
		{"JSON unknown needs", "{\"name\": \"wf\",\n \"nodes\": {\n  \"a\": {\"type\": \"noop\", \"needs\": [\"zz\"]}\n }}",
			`wf.yaml:3:35: node "a" needs "zz", which is not a node of this workflow`},
		{"empty mapping", "name: wf\nnodes: {}\n", "wf.yaml:2:8: the workflow has no nodes"},

		{"name differs from key", "name: wf\nnodes:\n  fetch:\n    type: noop\n    name: get\n",
			`wf.yaml:5:11: node "fetch" is named "get" inside; under a nodes mapping the key is the name, so drop name or make it "fetch"`},
		{"JSON name differs from key", `{"name": "wf", "nodes": {"a": {"name": "b", "type": "noop"}}}`,
			`wf.yaml:1:40: node "a" is named "b" inside; under a nodes mapping the key is the name, so drop name or make it "a"`},
		{"alias of a named node", "name: wf\nnodes:\n  a: &n {name: a, type: noop}\n  b: *n\n",
			`wf.yaml:3:16: node "b" is named "a" inside; under a nodes mapping the key is the name, so drop name or make it "b"`},
		{"duplicate key", "name: wf\nnodes:\n  a: {type: noop}\n  b: {type: noop}\n  a: {type: exec}\n",
			`wf.yaml:5:3: mapping key "a" already defined at [3:3]`},
		{"JSON duplicate key", `{"name": "wf", "nodes": {"a": {"type": "noop"}, "a": {"type": "noop"}}}`,
			`wf.yaml:1:49: mapping key "a" already defined at [1:26]`},
		{"nodes a string", "name: wf\nnodes: fetch\n",
			"wf.yaml:2:8: nodes must be a list of nodes or a mapping from node name to node (got a YAML string)"},
		{"nodes a number", `{"name": "wf", "nodes": 3}`,
			"wf.yaml:1:25: nodes must be a list of nodes or a mapping from node name to node (got a YAML int)"},
		{"value a string", "name: wf\nnodes:\n  fetch: http\n",
			`wf.yaml:3:10: node "fetch" must be a mapping of its settings, such as "fetch: {type: noop}" (got a YAML string)`},
		{"value a list", "name: wf\nnodes:\n  a: {type: noop}\n  fetch: [http]\n",
			`wf.yaml:4:10: node "fetch" must be a mapping of its settings, such as "fetch: {type: noop}" (got a YAML sequence)`},
		{"merge key under nodes", "name: wf\nnodes:\n  <<: {a: {type: noop}}\n",
			"wf.yaml:3:3: a merge key (<<) cannot stand directly under nodes: write each node under its own name"},
		{"null key", "name: wf\nnodes:\n  ~: {type: noop}\n",
			"wf.yaml:3:3: a node name under nodes must be a plain string (got a YAML null)"},
		{"alias to no node", "name: wf\nnodes:\n  a: {type: noop, with: {output: &o 1}}\n  b: *o\n",
			`wf.yaml:4:6: node "b": *o is not the anchor of an earlier node under nodes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := Parse("wf.yaml", []byte(tt.src), ValidateOptions{})
			if w != nil {
				t.Errorf("Parse returned a workflow with its error")
			}
			requireOneLine(t, err)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			if err.Error() != tt.want {
				t.Fatalf("Parse:\n got %s\nwant %s", err, tt.want)
			}
			for _, p := range ve.Problems {
				if p.Line == 0 || p.Col == 0 {
					t.Errorf("problem without a position: %+v", p)
				}
			}
		})
	}
}

// TestParseMapPlacesEveryProblem checks the position of each problem when a mapping has
// several, in different nodes.
func TestParseMapPlacesEveryProblem(t *testing.T) {
	t.Parallel()
	src := `name: wf
nodes:
  fetch:
    type: noop
    retry:
      max_attempts: 0
  store:
    type: noop
    retry: {jitter: 2}
  done: {type: noop, timeout: -1s}
`
	_, err := Parse("wf.yaml", []byte(src), ValidateOptions{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T, want *ValidationError: %v", err, err)
	}
	want := []string{
		"wf.yaml:6:21: retry.max_attempts must be positive (got 0)",
		"wf.yaml:9:21: retry.jitter 2: use 0 to 1",
		"wf.yaml:10:31: timeout must be positive",
	}
	if got := ve.Lines(); !slices.Equal(got, want) {
		t.Fatalf("problems:\n got %q\nwant %q", got, want)
	}
}
