package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func testVars() Vars {
	return Vars{
		Input: json.RawMessage(`{"user": {"id": 7, "name": "ann", "tags": ["a", "b"]},
			"items": [{"id": 1, "price": 2.5}, {"id": 2, "price": 4}],
			"html": "<a&b>", "empty": {}, "nothing": null, "count": 3, "s": "${{ run_id }}"}`),
		Nodes: map[string]json.RawMessage{
			"fetch": json.RawMessage(`{"url": "https://x.example/y", "status": 200, "body": {"ok": true}, "n": null}`),
			"count": json.RawMessage(`3`),
			"none":  nil,
		},
		RunID: "run-1",
		Env:   map[string]string{"REGION": "eu"},
	}
}

func TestExpandValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"no expression", "plain ${ text } {{ }}", "plain ${ text } {{ }}"},
		{"string", "${{ input.user.name }}", "ann"},
		{"number", "${{ input.user.id }}", 7.0},
		{"arithmetic", "${{ input.count * 2 + 1 }}", 7.0},
		{"integer literal is a JSON number", "${{ 1 + 2 }}", 3.0},
		{"bool", "${{ nodes.fetch.body.ok }}", true},
		{"null", "${{ nodes.fetch.n }}", nil},
		{"object", "${{ nodes.fetch.body }}", map[string]any{"ok": true}},
		{"array", "${{ input.user.tags }}", []any{"a", "b"}},
		{"whole input", "${{ input.items[0] }}", map[string]any{"id": 1.0, "price": 2.5}},
		{"node output that is a number", "${{ nodes.count }}", 3.0},
		{"node with empty output is null", "${{ nodes.none }}", nil},
		{"run_id", "${{ run_id }}", "run-1"},
		{"env", "${{ env.REGION }}", "eu"},
		{"index", "${{ input.user['name'] }}", "ann"},
		{"negative index", "${{ input.items[-1].id }}", 2.0},
		{"string index is a character", "${{ input.user.name[1] }}", "n"},
		{"map", "${{ map(input.items, .id) }}", []any{1.0, 2.0}},
		{"sum of a pipe", "${{ input.items | map(.price) | sum() }}", 6.5},
		{"filter", "${{ filter(input.items, .price > 3) }}", []any{map[string]any{"id": 2.0, "price": 4.0}}},
		{"let", "${{ let u = input.user; u.name + '-' + run_id }}", "ann-run-1"},
		{"conditional", "${{ input.count > 2 ? 'many' : 'few' }}", "many"},
		{"map literal with braces", "${{ {a: {b: 1}} }}", map[string]any{"a": map[string]any{"b": 1.0}}},
		{"closing braces in a string", "${{ '}}' }}", "}}"},
		{"literal opening", "${{ '${{' }}", "${{"},
		{"a result is not expanded again", "${{ input.s }}", "${{ run_id }}"},
		{"optional missing field", "${{ input?.nope }}", nil},
		{"optional of null", "${{ nodes.fetch.n?.x }}", nil},
		{"default with ??", "${{ input?.nope ?? 'dflt' }}", "dflt"},
		{"default of an optional item", "${{ input.items?.[5] ?? 0 }}", 0.0},
		{"in", "${{ 'user' in input }}", true},
		{"not in", "${{ 'nope' in input }}", false},
		{"get is lenient", "${{ get(input, 'nope') }}", nil},
		{"toJSON", "${{ toJSON(input.user.tags) }}", "[\n  \"a\",\n  \"b\"\n]"},
		{"fromJSON", `${{ fromJSON('{"a": [1]}') }}`, map[string]any{"a": []any{1.0}}},
		{"string()", "${{ string(input.count) }}", "3"},
		{"join", "${{ join(input.user.tags, '+') }}", "a+b"},
		{"replace", "${{ replace(nodes.fetch.url, 'x.example', 'y.example') }}", "https://y.example/y"},
		{"repeat", "${{ repeat('ab', 3) }}", "ababab"},
		{"concat", "${{ concat(input.user.tags, ['c']) }}", []any{"a", "b", "c"}},
		{"flatten", "${{ flatten([[1], [2, [3]]]) }}", []any{1.0, 2.0, 3.0}},
		{"upper", "${{ upper(input.user.name) }}", "ANN"},
		{"date becomes its JSON string", "${{ date('2024-01-02') }}", "2024-01-02T00:00:00Z"},
		{"whitespace inside is fine", "${{\n  input.user.id\n}}", 7.0},
		{"$env", "${{ $env.run_id }}", "run-1"},

		{"mixed text", "id=${{ input.user.id }}", "id=7"},
		{"mixed, two expressions", "${{ input.user.name }}/${{ input.count }}", "ann/3"},
		{"mixed, spaces around one expression", " ${{ input.user.name }} ", " ann "},
		{"mixed, object as JSON", "body=${{ nodes.fetch.body }}", `body={"ok":true}`},
		{"mixed, array as JSON", "tags: ${{ input.user.tags }}", `tags: ["a","b"]`},
		{"mixed, null", "n=${{ nodes.fetch.n }}", "n=null"},
		{"mixed, bool", "ok=${{ nodes.fetch.body.ok }}", "ok=true"},
		{"mixed, float", "p=${{ input.items[0].price }}", "p=2.5"},
		{"mixed, strings are not escaped", "h=${{ input.html }}", "h=<a&b>"},
		{"mixed, HTML in JSON is not escaped", "h=${{ [input.html] }}", `h=["<a&b>"]`},
		{"mixed, newline after one expression", "${{ input.count }}\n", "3\n"},

		{"nested map", map[string]any{"h": map[string]any{"X": "${{ run_id }}", "n": 1}}, map[string]any{"h": map[string]any{"X": "run-1", "n": 1}}},
		{"list", []any{"echo", "${{ input.user.name }}", 2, nil, true}, []any{"echo", "ann", 2, nil, true}},
		{"typed string list", []string{"echo", "${{ input.count }}"}, []any{"echo", 3.0}},
		{"typed string map", map[string]string{"a": "${{ env.REGION }}"}, map[string]any{"a": "eu"}},
		{"struct through JSON", struct {
			A string `json:"a"`
			B int    `json:"b"`
		}{"${{ run_id }}", 2}, map[string]any{"a": "run-1", "b": 2.0}},
		{"other values as they are", int64(5), int64(5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := Expand(map[string]any{"k": tt.in}, testVars())
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if got := out["k"]; !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestExpandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   any
		want string // the whole Error()
	}{
		{"missing field", "${{ input.user.naem }}",
			`with.k: ${{ input.user.naem }}: input.user has no field "naem" (it has "id", "name", "tags")`},
		{"missing node", "${{ nodes.fech.url }}",
			`with.k: ${{ nodes.fech.url }}: no node "fech" in nodes (it has "count", "fetch", "none"; a node sees only its parents' outputs)`},
		{"missing field of a node", "${{ nodes.fetch.uri }}",
			`with.k: ${{ nodes.fetch.uri }}: nodes.fetch has no field "uri" (it has "body", "n", "status", "url")`},
		{"field of null", "${{ nodes.fetch.n.x }}",
			`with.k: ${{ nodes.fetch.n.x }}: nodes.fetch.n is null, so it has no field "x"`},
		{"field of a null node output", "${{ nodes.none.x }}",
			`with.k: ${{ nodes.none.x }}: nodes.none is null, so it has no field "x"`},
		{"field of an empty object", "${{ input.empty.x }}",
			`with.k: ${{ input.empty.x }}: input.empty has no field "x" (it is empty)`},
		{"?. is one step only", "${{ input?.nope.x }}",
			`with.k: ${{ input?.nope.x }}: input?.nope is null, so it has no field "x"`},
		{"?? does not catch a missing field", "${{ input.nope ?? 1 }}",
			`with.k: ${{ input.nope ?? 1 }}: input has no field "nope" (it has "count", "empty", "html", "items", "nothing", "s", "user")`},
		{"env not allowed", "${{ env.HOME }}",
			`with.k: ${{ env.HOME }}: no variable "HOME" in env (it has "REGION"; the worker decides which variables are allowed)`},
		{"index out of range", "${{ input.items[2] }}",
			`with.k: ${{ input.items[2] }}: input.items has 2 items, so it has no item 2`},
		{"index of an object", "${{ input.user[0] }}",
			`with.k: ${{ input.user[0] }}: input.user is an object: read it with a string key, not a number`},
		{"field of an array", "${{ input.items.id }}",
			`with.k: ${{ input.items.id }}: input.items is an array: read it with a whole number, not field "id"`},
		{"field of a string", "${{ input.user.name.x }}",
			`with.k: ${{ input.user.name.x }}: input.user.name is a string, so it has no field "x"`},
		{"field of a number", "${{ input.count.x }}",
			`with.k: ${{ input.count.x }}: input.count is a number, so it has no field "x"`},
		{"missing field in a loop", "${{ map(input.items, .nope) }}",
			`with.k: ${{ map(input.items, .nope) }}: # has no field "nope" (it has "id", "price")`},
		{"unknown name", "${{ inputs.x }}",
			"with.k: ${{ inputs.x }}: unknown name inputs (expressions can read input, nodes, run_id and env) (at column 1)"},
		{"now is disabled", "${{ now() }}",
			"with.k: ${{ now() }}: unknown name now (expressions can read input, nodes, run_id and env) (at column 1)"},
		{"method call", "${{ input.user.name.upper() }}",
			"with.k: ${{ input.user.name.upper() }}: cannot call the method upper(): call functions instead, such as upper(x)"},
		{"syntax", "${{ 1 + }}", "with.k: ${{ 1 + }}: unexpected token EOF (at column 3)"},
		{"type mismatch", "${{ input.user.name + 1 }}", "with.k: ${{ input.user.name + 1 }}: invalid operation: string + int (at column 17)"},
		{"division by zero is not JSON", "${{ 1 / 0 }}", "with.k: ${{ 1 / 0 }}: the value +Inf cannot be written as JSON"},
		{"map with non-string keys", "${{ groupBy(input.items, .id) }}",
			"with.k: ${{ groupBy(input.items, .id) }}: the value cannot be written as JSON: json: unsupported type: map[interface {}][]interface {}"},
		{"unterminated", "a ${{ input.user", `with.k: ${{ input.user: unterminated "${{": close it with "}}"`},
		{"unterminated string", "${{ 'abc }}", `with.k: ${{ 'abc }}: unterminated string in the expression; close it with '`},
		{"empty", "x${{ }}y", "with.k: ${{ }}: the expression is empty"},
		{"too long", "${{ '" + strings.Repeat("x", 5000) + "' }}", "with.k: ${{ '" + strings.Repeat("x", 115) + "…}}: the expression is 5002 bytes; at most 4096 are allowed"},
		{"too many nodes", "${{ " + strings.Repeat("1+", 1100) + "1 }}", ""},
		{"second expression fails", "${{ run_id }}-${{ input.nope }}",
			`with.k: ${{ input.nope }}: input has no field "nope" (it has "count", "empty", "html", "items", "nothing", "s", "user")`},
		{"error in a nested key", map[string]any{"headers": map[string]any{"Authorization": "Bearer ${{ env.TOKEN }}"}},
			`with.k.headers.Authorization: ${{ env.TOKEN }}: no variable "TOKEN" in env (it has "REGION"; the worker decides which variables are allowed)`},
		{"error in a list", []any{"a", "${{ nodes.x }}"},
			`with.k[1]: ${{ nodes.x }}: no node "x" in nodes (it has "count", "fetch", "none"; a node sees only its parents' outputs)`},
		{"first error in key order", map[string]any{"b": "${{ input.b }}", "a": "${{ input.a }}"},
			`with.k.a: ${{ input.a }}: input has no field "a" (it has "count", "empty", "html", "items", "nothing", "s", "user")`},
		{"multi-line expression stays one line", "${{ input\n.nope }}",
			`with.k: ${{ input .nope }}: input has no field "nope" (it has "count", "empty", "html", "items", "nothing", "s", "user")`},
		{"not JSON", struct{ C chan int }{}, "with.k: cannot be written as JSON: json: unsupported type: chan int"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := Expand(map[string]any{"k": tt.in}, testVars())
			if out != nil {
				t.Errorf("Expand returned %v with its error", out)
			}
			requireOneLine(t, err)
			var ee *ExprError
			if !errors.As(err, &ee) {
				t.Fatalf("error is %T, want *ExprError: %v", err, err)
			}
			if !strings.HasPrefix(ee.Key, "with.k") {
				t.Errorf("Key = %q", ee.Key)
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Fatalf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestExpandBadVars(t *testing.T) {
	t.Parallel()
	with := map[string]any{"a": "plain", "b": "${{ run_id }}"}
	tests := []struct {
		name string
		v    Vars
		want string
	}{
		{"input", Vars{Input: json.RawMessage(`{"a":`)}, "with.b: ${{ run_id }}: the run input is not valid JSON: unexpected end of JSON input"},
		{"node output", Vars{Nodes: map[string]json.RawMessage{"p": json.RawMessage(`nope`)}},
			`with.b: ${{ run_id }}: the output of node "p" is not valid JSON: invalid character 'o' in literal null (expecting 'u')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Expand(with, tt.v)
			requireOneLine(t, err)
			if err.Error() != tt.want {
				t.Fatalf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
	// Bad JSON does not matter when nothing reads it.
	out, err := Expand(map[string]any{"a": "plain"}, Vars{Input: json.RawMessage(`{`)})
	if err != nil || out["a"] != "plain" {
		t.Fatalf("Expand without expressions: %v, %v", out, err)
	}
}

// TestExpandLimits runs expressions that would take much memory or time unbounded.
func TestExpandLimits(t *testing.T) {
	t.Parallel()
	const (
		tooBig   = "the value is"
		tooMuch  = "the expressions do too much work"
		tooLarge = "the expressions handle too much text"
	)
	tests := []struct {
		name, expr, want string
	}{
		{"repeat", "repeat('x', 1000000000)", tooBig},
		{"repeat of a long string", "repeat(repeat('x', 1000000), 1000)", tooBig},
		{"nested loops", "let a = 1..999; map(a, map(a, map(a, 1)))", tooMuch},
		{"big range", "len(1..100000000)", "the expression builds too much (over expr's memory budget"},
		{"doubling with let", "let a = repeat('x', 4000000); let b = a + a; let c = b + b; c + c", tooBig},
		{"join amplification", "let s = repeat('x', 1000000); join(map(1..100, s), ',')", tooBig},
		{"text built in a loop", "join(map(1..300000, repeat('x', 1000)), ',')", tooLarge},
		{"string concatenation in a loop", "reduce(1..100000, #acc + 'xxxxxxxxxxxxxxxxxxxx', '')", tooLarge},
		{"replace amplification", "replace(repeat('x', 100000), '', repeat('y', 1000))", tooBig},
		{"toJSON amplification", "toJSON(map(1..300000, input.user))", tooBig},
		{"string amplification", "string(map(1..300000, input.user))", tooBig},
		{"concat amplification", "let a = map(1..100000, 1); concat(a, a, a, a, a, a, a, a, a, a, a)", tooMuch},
		{"flatten amplification", "let a = map(1..1000, 1); flatten(map(1..1000, a))", tooMuch},
		{"result too big", "map(1..300000, input.user)", tooBig},
		{"scanning a long string in a loop", "let s = repeat('x', 1000000); count(1..1000, s contains 'y')", tooLarge},
		{"sorting in a loop", "let a = map(1..100000, #); map(1..1000, sort(a))", tooMuch + "|over expr's memory budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Expand(map[string]any{"k": "${{ " + tt.expr + " }}"}, testVars())
			requireOneLine(t, err)
			for _, want := range strings.Split(tt.want, "|") {
				if strings.Contains(err.Error(), want) {
					return
				}
			}
			t.Fatalf("got %v, want it to say %q", err, tt.want)
		})
	}
}

// TestExpandBudgetIsPerCall checks that expressions share one budget within an Expand call,
// and that each call starts afresh.
func TestExpandBudgetIsPerCall(t *testing.T) {
	t.Parallel()
	// Each builds 8 MB of text and hands it to len(): 16 MB of the 64 MB budget.
	heavy := "${{ len(repeat('x', 8000000)) }}"
	with := map[string]any{"0": heavy, "1": heavy, "2": heavy}
	for range 3 {
		if _, err := Expand(with, Vars{}); err != nil {
			t.Fatalf("3 heavy expressions: %v", err)
		}
	}
	with["3"], with["4"] = heavy, heavy
	_, err := Expand(with, Vars{})
	requireOneLine(t, err)
	if !strings.Contains(err.Error(), "the expressions handle too much text") {
		t.Fatalf("5 heavy expressions: got %v", err)
	}
}

func TestExpandCopies(t *testing.T) {
	t.Parallel()
	inner := map[string]any{"x": "${{ run_id }}", "keep": []any{1, "two"}}
	with := map[string]any{"m": inner, "plain": "p"}
	out, err := Expand(with, testVars())
	if err != nil {
		t.Fatal(err)
	}
	out["m"].(map[string]any)["keep"].([]any)[0] = "changed"
	out["m"].(map[string]any)["new"] = true
	if inner["x"] != "${{ run_id }}" || inner["keep"].([]any)[0] != 1 || len(inner) != 2 {
		t.Fatalf("Expand changed its argument: %v", inner)
	}
	// A result that aliases the decoded input must not leak changes into the next call.
	v := testVars()
	first, err := Expand(map[string]any{"u": "${{ input.user }}"}, v)
	if err != nil {
		t.Fatal(err)
	}
	first["u"].(map[string]any)["name"] = "bob"
	second, err := Expand(map[string]any{"u": "${{ input.user.name }}"}, v)
	if err != nil || second["u"] != "ann" {
		t.Fatalf("second call: %v, %v", second, err)
	}
	if got, err := Expand(nil, v); got != nil || err != nil {
		t.Fatalf("Expand(nil) = %v, %v", got, err)
	}
	if got, err := Expand(map[string]any{}, v); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Expand(empty) = %v, %v", got, err)
	}
}

func TestHasExpr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		with map[string]any
		want bool
	}{
		{"nil", nil, false},
		{"plain", map[string]any{"a": "x", "b": 1, "c": nil, "d": true, "e": 1.5}, false},
		{"top level", map[string]any{"a": "${{ x }}"}, true},
		{"inside text", map[string]any{"a": "x ${{ x }} y"}, true},
		{"nested map", map[string]any{"a": map[string]any{"b": "${{ x }}"}}, true},
		{"nested list", map[string]any{"a": []any{1, []any{"${{ x }}"}}}, true},
		{"typed list", map[string]any{"a": []string{"x", "${{ x }}"}}, true},
		{"typed map", map[string]any{"a": map[string]string{"x": "${{ x }}"}}, true},
		{"struct", map[string]any{"a": struct{ S string }{"${{ x }}"}}, true},
		{"key only", map[string]any{"${{ x }}": "x"}, false},
		{"almost", map[string]any{"a": "${ x }", "b": "{{ x }}", "c": "$ {{"}, false},
		{"unterminated counts", map[string]any{"a": "${{"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := HasExpr(tt.with); got != tt.want {
				t.Fatalf("HasExpr = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestExpandConcurrent(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				want := fmt.Sprintf("%d-%d", g, i%5)
				out, err := Expand(map[string]any{"k": fmt.Sprintf("${{ '%d-' + string(%d) }}", g, i%5)}, testVars())
				if err != nil {
					errs <- err
					return
				}
				if out["k"] != want {
					errs <- fmt.Errorf("got %v, want %s", out["k"], want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestProgCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := &progCache{max: 3}
	for i := range 10 {
		src := fmt.Sprint(i)
		c.put(src, compiled{})
		if _, ok := c.get(src); !ok {
			t.Fatalf("entry %s missing right after put", src)
		}
		n := 0
		c.m.Range(func(any, any) bool { n++; return true })
		if n > 3 {
			t.Fatalf("cache holds %d entries, cap 3", n)
		}
	}
	// Putting an entry that is already there does not count twice.
	c = &progCache{max: 3}
	for range 5 {
		c.put("same", compiled{})
	}
	if got := c.n.Load(); got != 1 {
		t.Fatalf("count = %d, want 1", got)
	}
}

func TestCompileExprCachesErrors(t *testing.T) {
	t.Parallel()
	src := "unknown_" + t.Name()
	_, err1 := compileExpr(src)
	_, err2 := compileExpr(src)
	if err1 == nil || err1 != err2 { //nolint:errorlint // the very same cached value, not a kind of error
		t.Fatalf("errors %v and %v: want the same cached error", err1, err2)
	}
}

func TestSplitTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string // literal text as is, expressions as [src]
	}{
		{"abc", []string{"abc"}},
		{"${{ a }}", []string{"[a]"}},
		{"x${{a}}y${{ b }}z", []string{"x", "[a]", "y", "[b]", "z"}},
		{"${{ {a: 1} }}", []string{"[{a: 1}]"}},
		{"${{ {a: {b: 1}} }}", []string{"[{a: {b: 1}}]"}},
		{`${{ "}}" + '}}' + ` + "`}}`" + ` }}`, []string{`["}}" + '}}' + ` + "`}}`]"}},
		{`${{ "a\"}}" }}`, []string{`["a\"}}"]`}},
		{"${{ a }}}", []string{"[a]", "}"}},
		{"}} ${{ a }}", []string{"}} ", "[a]"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			parts, err := splitTemplate(tt.in)
			if err != nil {
				t.Fatal(err.err)
			}
			var got []string
			for _, p := range parts {
				if p.isExpr {
					got = append(got, "["+p.src+"]")
				} else {
					got = append(got, p.text)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkExpand(b *testing.B) {
	with := map[string]any{
		"url":     "https://api.example/orders/${{ input.user.id }}",
		"headers": map[string]any{"X-Run": "${{ run_id }}", "Accept": "application/json"},
		"body":    "${{ nodes.fetch.body }}",
	}
	v := testVars()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Expand(with, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHasExpr(b *testing.B) {
	with := map[string]any{"command": []any{"echo", "hello"}, "env": map[string]any{"A": "b"}}
	for b.Loop() {
		if HasExpr(with) {
			b.Fatal("HasExpr")
		}
	}
}
