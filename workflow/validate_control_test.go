package workflow

import (
	"errors"
	"strings"
	"testing"
)

// pair returns a workflow of a root node p (noop) and the node n, which needs p unless it
// says otherwise.
func pair(n *Node) *Workflow {
	if n.Needs == nil {
		n.Needs = []string{"p"}
	}
	return &Workflow{Name: "wf", Nodes: []*Node{{Name: "p", Type: "noop"}, n}}
}

func TestValidateControl(t *testing.T) {
	t.Parallel()
	root := one
	tests := []struct {
		name string
		w    *Workflow
		want string // the whole Error(); empty means valid
		path string // the first problem's path
	}{
		// Valid.
		{name: "if on a root reads input", w: root(&Node{Name: "a", Type: "noop", If: "${{ input.go == true }}"})},
		{name: "if with spaces around", w: root(&Node{Name: "a", Type: "noop", If: "  ${{ input.go }}\n"})},
		{name: "if reads a parent, run_id and env", w: pair(&Node{Name: "a", Type: "noop", If: `${{ nodes.p.ok && run_id != "" && env.MODE == "x" }}`})},
		{name: "if reads a parent by index", w: pair(&Node{Name: "a", Type: "noop", If: `${{ nodes["p"] != nil }}`})},
		{name: "if reads nodes by a computed name", w: pair(&Node{Name: "a", Type: "noop", If: `${{ nodes[input.which] != nil }}`})},
		{name: "for_each on a root reads input", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.items }}"})},
		{name: "for_each on a child reads a parent", w: pair(&Node{Name: "a", Type: "noop", ForEach: "${{ nodes.p.list }}"})},
		{name: "for_each with reads item and index", w: root(&Node{Name: "a", Type: "http", ForEach: "${{ input.urls }}",
			With: map[string]any{"url": "${{ item }}", "headers": map[string]any{"X-Index": "${{ index }}"}, "body": []any{"x", "${{ item.id }}"}}})},
		{name: "max_parallel 1", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.items }}", MaxParallel: 1})},
		{name: "max_parallel 1000", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.items }}", MaxParallel: MaxParallelLimit})},
		{name: "with reads a parent", w: pair(&Node{Name: "a", Type: "http", With: map[string]any{"url": "https://x/${{ nodes.p.id }}"}})},
		{name: "with without expressions", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "https://x/{{ not one }}"}})},
		{name: "with of a custom type", w: root(&Node{Name: "a", Type: "mine", With: map[string]any{"x": map[string]any{"y": []any{"${{ input.z }}"}}}})},
		{name: "with in Go types", w: root(&Node{Name: "a", Type: "mine", With: map[string]any{"l": []string{"${{ input.z }}"}, "m": map[string]string{"k": "${{ run_id }}"}}})},
		{name: "subflow", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "child"}})},
		{name: "subflow with input", w: pair(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "child", "input": map[string]any{"id": "${{ nodes.p.id }}", "n": 3}}})},
		{name: "subflow with input expression", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "child", "input": "${{ input }}"}})},
		{name: "subflow with if", w: root(&Node{Name: "a", Type: SubflowType, If: "${{ input.go }}", With: map[string]any{"workflow": "child"}})},

		// if and for_each: one expression that compiles.
		{name: "if syntax error", w: root(&Node{Name: "a", Type: "noop", If: "${{ input.x == }}"}),
			want: `$.nodes[0].if: node "a": if: ${{ input.x == }}: unexpected token EOF (at column 10)`, path: "$.nodes[0].if"},
		{name: "if unknown name", w: root(&Node{Name: "a", Type: "noop", If: "${{ inptu.x }}"}),
			want: `$.nodes[0].if: node "a": if: ${{ inptu.x }}: unknown name inptu (expressions can read input, nodes, run_id and env) (at column 1)`, path: "$.nodes[0].if"},
		{name: "if not an expression", w: root(&Node{Name: "a", Type: "noop", If: "true"}),
			want: `$.nodes[0].if: node "a": if: true: write one expression: "${{ … }}" with nothing around it`, path: "$.nodes[0].if"},
		{name: "if with text around", w: root(&Node{Name: "a", Type: "noop", If: "${{ input.x }} == 1"}),
			want: `$.nodes[0].if: node "a": if: ${{ input.x }} == 1: write one expression: "${{ … }}" with nothing around it`, path: "$.nodes[0].if"},
		{name: "if unterminated", w: root(&Node{Name: "a", Type: "noop", If: "${{ input.x"}),
			want: `$.nodes[0].if: node "a": if: ${{ input.x: unterminated "${{": close it with "}}"`, path: "$.nodes[0].if"},
		{name: "for_each syntax error", w: pair(&Node{Name: "a", Type: "noop", ForEach: "${{ nodes.p.list[ }}"}),
			want: `$.nodes[1].for_each: node "a": for_each: ${{ nodes.p.list[ }}: unexpected token EOF (at column 13)`, path: "$.nodes[1].for_each"},
		{name: "for_each empty expression", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ }}"}),
			want: `$.nodes[0].for_each: node "a": for_each: ${{ }}: the expression is empty`, path: "$.nodes[0].for_each"},

		// What a root node's for_each may read.
		{name: "root for_each reads nodes", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ nodes.x }}"}),
			want: `$.nodes[0].for_each: node "a": for_each of a root node (no needs) can read only input, not nodes: its items are dispatched as the run starts`, path: "$.nodes[0].for_each"},
		{name: "root for_each reads run_id", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ [run_id] }}"}),
			want: `$.nodes[0].for_each: node "a": for_each of a root node (no needs) can read only input, not run_id: its items are dispatched as the run starts`, path: "$.nodes[0].for_each"},
		{name: "root for_each reads env after input", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.list ?? [env.X] }}"}),
			want: `$.nodes[0].for_each: node "a": for_each of a root node (no needs) can read only input, not env: its items are dispatched as the run starts`, path: "$.nodes[0].for_each"},
		{name: "child for_each reads run_id and env", w: pair(&Node{Name: "a", Type: "noop", ForEach: "${{ [run_id, env.X] }}"})},

		// item and index: only in a for_each node's with.
		{name: "root for_each reads item", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ item }}"}),
			want: `$.nodes[0].for_each: node "a": for_each reads item, which only the with of a for_each node can read`, path: "$.nodes[0].for_each"},
		{name: "child for_each reads index", w: pair(&Node{Name: "a", Type: "noop", ForEach: "${{ nodes.p[index:] }}"}),
			want: `$.nodes[1].for_each: node "a": for_each reads index, which only the with of a for_each node can read`, path: "$.nodes[1].for_each"},
		{name: "if reads item", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.l }}", If: "${{ item > 2 }}"}),
			want: `$.nodes[0].if: node "a": if reads item, which only the with of a for_each node can read`, path: "$.nodes[0].if"},
		{name: "if reads index", w: pair(&Node{Name: "a", Type: "noop", If: "${{ index == 0 }}"}),
			want: `$.nodes[1].if: node "a": if reads index, which only the with of a for_each node can read`, path: "$.nodes[1].if"},
		{name: "with reads item without for_each", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "https://x/${{ item }}"}}),
			want: `$.nodes[0].with.url: node "a": with.url reads item, which only the with of a for_each node can read: add for_each to the node or stop reading item`, path: "$.nodes[0].with.url"},
		{name: "nested with reads index without for_each", w: root(&Node{Name: "a", Type: "exec", With: map[string]any{"command": []any{"echo", "${{ index }}"}}}),
			want: `$.nodes[0].with.command[1]: node "a": with.command[1] reads index, which only the with of a for_each node can read: add for_each to the node or stop reading index`, path: "$.nodes[0].with.command[1]"},
		{name: "subflow input reads item", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "c", "input": map[string]any{"x": "${{ item }}"}}}),
			want: `$.nodes[0].with.input.x: node "a": with.input.x reads item, which only the with of a for_each node can read: add for_each to the node or stop reading item`, path: "$.nodes[0].with.input.x"},

		// nodes.X: only parents.
		{name: "if reads a node that is not a parent", w: pair(&Node{Name: "a", Type: "noop", If: "${{ nodes.q.ok }}"}),
			want: `$.nodes[1].if: node "a": if reads nodes.q, but q is not in the node's needs: add it to needs (expressions see only the parents' outputs)`, path: "$.nodes[1].if"},
		{name: "root if reads a node", w: &Workflow{Name: "wf", Nodes: []*Node{{Name: "p", Type: "noop"}, {Name: "a", Type: "noop", If: "${{ nodes.p.ok }}"}}},
			want: `$.nodes[1].if: node "a": if reads nodes.p, but p is not in the node's needs: add it to needs (expressions see only the parents' outputs)`, path: "$.nodes[1].if"},
		{name: "for_each reads a node that is not a parent", w: pair(&Node{Name: "a", Type: "noop", ForEach: "${{ nodes.p.l + nodes.a.l }}"}),
			want: `$.nodes[1].for_each: node "a": for_each reads nodes.a, but a is not in the node's needs: add it to needs (expressions see only the parents' outputs)`, path: "$.nodes[1].for_each"},
		{name: "with reads a node that is not a parent", w: pair(&Node{Name: "a", Type: "http", With: map[string]any{"url": "x", "body": map[string]any{"q": `${{ nodes["q"]?.v ?? 1 }}`}}}),
			want: `$.nodes[1].with.body.q: node "a": with.body.q reads nodes.q, but q is not in the node's needs: add it to needs (expressions see only the parents' outputs)`, path: "$.nodes[1].with.body.q"},

		// with expressions compile.
		{name: "with syntax error", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "https://x/${{ input.id }}/${{ input.( }}"}}),
			want: `$.nodes[0].with.url: node "a": with.url: ${{ input.( }}: expected name (at column 7)`, path: "$.nodes[0].with.url"},
		{name: "with unterminated", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "https://x/${{ input.id"}}),
			want: `$.nodes[0].with.url: node "a": with.url: ${{ input.id: unterminated "${{": close it with "}}"`, path: "$.nodes[0].with.url"},
		{name: "nested with syntax error", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "x", "headers": map[string]any{"X-Key": "${{ env. }}"}}}),
			want: `$.nodes[0].with.headers.X-Key: node "a": with.headers.X-Key: ${{ env. }}: unexpected end of expression (at column 4)`, path: "$.nodes[0].with.headers.X-Key"},
		{name: "with key that needs quoting", w: root(&Node{Name: "a", Type: "mine", With: map[string]any{"a.b": "${{ nope }}"}}),
			want: `$.nodes[0].with.'a.b': node "a": with.'a.b': ${{ nope }}: unknown name nope (expressions can read input, nodes, run_id and env) (at column 1)`, path: "$.nodes[0].with.'a.b'"},
		{name: "with list syntax error", w: root(&Node{Name: "a", Type: "exec", With: map[string]any{"command": []any{"echo", "${{ 1 + }}"}}}),
			want: `$.nodes[0].with.command[1]: node "a": with.command[1]: ${{ 1 + }}: unexpected token EOF (at column 3)`, path: "$.nodes[0].with.command[1]"},

		// max_parallel.
		{name: "max_parallel negative", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.l }}", MaxParallel: -1}),
			want: `$.nodes[0].max_parallel: node "a": max_parallel -1: use 1 to 1000 (items of one run in flight at once)`, path: "$.nodes[0].max_parallel"},
		{name: "max_parallel 1001", w: root(&Node{Name: "a", Type: "noop", ForEach: "${{ input.l }}", MaxParallel: 1001}),
			want: `$.nodes[0].max_parallel: node "a": max_parallel 1001: use 1 to 1000 (items of one run in flight at once)`, path: "$.nodes[0].max_parallel"},
		{name: "max_parallel without for_each", w: root(&Node{Name: "a", Type: "noop", MaxParallel: 4}),
			want: `$.nodes[0].max_parallel: node "a": max_parallel is set without for_each: it bounds a for_each node's items in flight; add for_each or remove max_parallel`, path: "$.nodes[0].max_parallel"},

		// The workflow type.
		{name: "subflow without with", w: root(&Node{Name: "a", Type: SubflowType}),
			want: `$.nodes[0].with: workflow node "a" needs with.workflow: the name of the workflow it runs`, path: "$.nodes[0].with"},
		{name: "subflow with only input", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"input": 1}}),
			want: `$.nodes[0].with: workflow node "a" needs with.workflow: the name of the workflow it runs`, path: "$.nodes[0].with"},
		{name: "subflow workflow expression", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "${{ input.wf }}"}}),
			want: `$.nodes[0].with.workflow: workflow node "a": with.workflow must name the workflow it runs, not hold an expression`, path: "$.nodes[0].with.workflow"},
		{name: "subflow bad workflow name", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "my flow"}}),
			want: `$.nodes[0].with.workflow: workflow node "a": workflow name "my flow": use letters, digits, '_' and '-' only`, path: "$.nodes[0].with.workflow"},
		{name: "subflow empty workflow name", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": ""}}),
			want: `$.nodes[0].with.workflow: workflow node "a": workflow name "": use letters, digits, '_' and '-' only`, path: "$.nodes[0].with.workflow"},
		{name: "subflow workflow not a string", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": []any{"x"}}}),
			want: `$.nodes[0].with.workflow: workflow node "a": with.workflow must be a workflow name`, path: "$.nodes[0].with.workflow"},
		{name: "subflow unknown setting", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "c", "inputs": 1}}),
			want: `$.nodes[0].with.inputs: workflow node "a": unknown setting "inputs" under with (allowed: workflow, input)`, path: "$.nodes[0].with.inputs"},
		{name: "subflow for_each", w: root(&Node{Name: "a", Type: SubflowType, ForEach: "${{ input.l }}", With: map[string]any{"workflow": "c"}}),
			want: `$.nodes[0].for_each: node "a": for_each on a workflow node is not supported`, path: "$.nodes[0].for_each"},
		{name: "subflow as a fallback", w: root(&Node{Name: "a", Type: "http", With: map[string]any{"url": "x"}, Fallback: Fallback{SubflowType}}),
			want: `$.nodes[0].fallback[0]: node "a": a fallback cannot be a workflow node (fallbacks run in the worker's process); use a node type with a handler`, path: "$.nodes[0].fallback[0]"},
		{name: "subflow is built in for a registry", w: root(&Node{Name: "a", Type: SubflowType, With: map[string]any{"workflow": "c"}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := ValidateOptions{KnownType: func(string) bool { return false }}
			if tt.w.Nodes[len(tt.w.Nodes)-1].Type == "mine" {
				opts = ValidateOptions{}
			}
			err := tt.w.Validate(opts)
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
		})
	}
}

func TestIsBuiltinSubflow(t *testing.T) {
	t.Parallel()
	if !IsBuiltin(SubflowType) {
		t.Errorf("IsBuiltin(%q) = false", SubflowType)
	}
	if got := strings.Join(BuiltinTypes(), ","); got != "exec,http,llm,noop,service,sleep,wait,workflow" {
		t.Errorf("BuiltinTypes() = %s", got)
	}
}

func TestParseControlPositions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want string // the whole Error()
	}{
		{"if syntax error", node1("noop", `if: "${{ input.x == }}"`),
			`wf.yaml:5:9: node "a": if: ${{ input.x == }}: unexpected token EOF (at column 10)`},
		{"if not an expression", node1("noop", `if: yes please`),
			`wf.yaml:5:9: node "a": if: yes please: write one expression: "${{ … }}" with nothing around it`},
		{"for_each syntax error", node1("noop", `for_each: "${{ input.list[ }}"`),
			`wf.yaml:5:15: node "a": for_each: ${{ input.list[ }}: unexpected token EOF (at column 11)`},
		{"root for_each reads env", node1("noop", `for_each: "${{ env.LIST }}"`),
			`wf.yaml:5:15: node "a": for_each of a root node (no needs) can read only input, not env: its items are dispatched as the run starts`},
		{"with syntax error", node1("http", "with:", `  url: "https://x/${{ input.( }}"`),
			`wf.yaml:6:12: node "a": with.url: ${{ input.( }}: expected name (at column 7)`},
		{"nested with reads item", node1("http", "with:", "  url: x", "  headers:", `    X-Item: "${{ item }}"`),
			`wf.yaml:8:17: node "a": with.headers.X-Item reads item, which only the with of a for_each node can read: add for_each to the node or stop reading item`},
		{"quoted with key", node1("mine", "with:", "  x:", `    "a.b": "${{ nope }}"`),
			`wf.yaml:7:16: node "a": with.x.'a.b': ${{ nope }}: unknown name nope (expressions can read input, nodes, run_id and env) (at column 1)`},
		{"max_parallel out of range", node1("noop", `for_each: "${{ input.l }}"`, "max_parallel: 5000"),
			`wf.yaml:6:19: node "a": max_parallel 5000: use 1 to 1000 (items of one run in flight at once)`},
		{"max_parallel without for_each", node1("noop", "max_parallel: 5"),
			`wf.yaml:5:19: node "a": max_parallel is set without for_each: it bounds a for_each node's items in flight; add for_each or remove max_parallel`},
		{"subflow without workflow", node1("workflow", "with: {input: 1}"),
			`wf.yaml:5:11: workflow node "a" needs with.workflow: the name of the workflow it runs`},
		{"subflow for_each", node1("workflow", `for_each: "${{ input.l }}"`, "with: {workflow: child}"),
			`wf.yaml:5:15: node "a": for_each on a workflow node is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := Parse("wf.yaml", []byte(tt.src), ValidateOptions{})
			if w != nil {
				t.Errorf("Parse returned a workflow with its error")
			}
			requireOneLine(t, err)
			if err.Error() != tt.want {
				t.Fatalf("Parse:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestParseControl(t *testing.T) {
	t.Parallel()
	src := `name: fan
nodes:
  - name: list
    type: noop
    if: "${{ input.go }}"
  - name: each
    type: http
    needs: [list]
    for_each: "${{ nodes.list }}"
    max_parallel: 4
    with: {url: "https://x/${{ item.id }}?i=${{ index }}"}
  - name: child
    type: workflow
    needs: [each]
    with: {workflow: other, input: {results: "${{ nodes.each }}"}}
`
	w, err := Parse("fan.yaml", []byte(src), ValidateOptions{KnownType: func(string) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.Lookup("each"); n.ForEach != "${{ nodes.list }}" || n.MaxParallel != 4 || w.Lookup("list").If != "${{ input.go }}" {
		t.Errorf("parsed control flow: %+v", n)
	}
}
