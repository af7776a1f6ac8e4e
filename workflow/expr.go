package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"
)

// Limits of ${{ }} expressions. They bound what one Expand call may cost, whatever the
// definition or the data says; none of them is reached by ordinary templating.
const (
	maxExprBytes    = 4096              // source of one expression, between "${{" and "}}"
	maxExprNodes    = 1000              // syntax-tree nodes of one expression
	maxValueBytes   = 8 << 20           // any one string or value (as JSON) an expression builds or returns
	maxExprSteps    = 1_000_000         // loop iterations and collection items handled, per Expand call
	maxExprWork     = 64 << 20          // bytes of text handled and built, per Expand call
	maxValueDepth   = 10000             // nesting of values (the same as encoding/json's)
	maxCachedProgs  = 4096              // compiled expressions kept
	exprOpen        = "${{"             // opens an expression
	exprClose       = "}}"              // closes it
	meterVar        = "__jetflow_meter" // the per-call budget, in the expression environment
	fnGet           = "__jetflow_get"
	fnGetOptional   = "__jetflow_get_optional"
	fnAdd           = "__jetflow_add"
	fnUse           = "__jetflow_use"
	fnMethod        = "__jetflow_method"
	maxShownExprLen = 120
)

// Vars are what expressions in a node's `with` settings can read.
type Vars struct {
	// Input is the run input, as JSON (`input` in expressions; empty reads as null).
	Input json.RawMessage
	// Nodes are the outputs of the node's parents, as JSON, by node name (`nodes`).
	Nodes map[string]json.RawMessage
	// RunID is the run's ID (`run_id`).
	RunID string
	// Env holds only the environment variables the worker allows expressions to read (`env`).
	Env map[string]string
	// Item is a for_each item's value, as JSON (`item`); empty outside a for_each item.
	Item json.RawMessage
	// Index is the for_each item's index (`index`).
	Index int
}

// ExprError reports a `with` string whose ${{ }} expression could not be expanded. Its Error
// is one line: where the string is, the expression as written, and what went wrong.
type ExprError struct {
	// Key is where the string sits, such as "with.url" or "with.command[2]".
	Key string
	// Expr is the expression as written, "${{ … }}" (cut when long).
	Expr string
	// Err is what went wrong.
	Err error
}

// Error implements error.
func (e *ExprError) Error() string {
	s := e.Key + ": "
	if e.Expr != "" {
		s += e.Expr + ": "
	}
	return oneLine(s+e.Err.Error(), 1000)
}

// Unwrap returns the cause.
func (e *ExprError) Unwrap() error { return e.Err }

// HasExpr reports whether any string value in with, at any depth, holds "${{", so callers
// can skip Expand when there is nothing to expand. Keys are never expanded.
func HasExpr(with map[string]any) bool { return hasExpr(with, 0) }

func hasExpr(v any, depth int) bool {
	if depth > maxValueDepth {
		return true // let Expand report it
	}
	switch x := v.(type) {
	case nil, bool, float64, int, int64, uint64:
		return false
	case string:
		return strings.Contains(x, exprOpen)
	case map[string]any:
		for _, e := range x {
			if hasExpr(e, depth+1) {
				return true
			}
		}
		return false
	case []any:
		for _, e := range x {
			if hasExpr(e, depth+1) {
				return true
			}
		}
		return false
	case []string:
		return slices.ContainsFunc(x, func(s string) bool { return strings.Contains(s, exprOpen) })
	case map[string]string:
		for _, s := range x {
			if strings.Contains(s, exprOpen) {
				return true
			}
		}
		return false
	}
	if !composite(v) {
		return false
	}
	b, err := json.Marshal(v)
	return err != nil || bytes.Contains(b, []byte(exprOpen))
}

// Expand returns a deep copy of with in which every string holding ${{ expr }} is evaluated
// with expr-lang/expr over `input`, `nodes`, `run_id` and `env` (see Vars).
//
//   - A string that is exactly one expression, "${{ x }}" with nothing around it (not even
//     spaces), takes the expression's value, which may be any JSON value.
//   - A string that mixes text and expressions gets each value written into it: strings as
//     they are, other values as compact JSON (null for null).
//   - Values are JSON values: numbers are float64 (integers beyond 2^53 lose precision),
//     objects map[string]any, arrays []any; a value JSON cannot hold (NaN, a map with
//     non-string keys) is an error. Values are never
//     expanded twice: a result holding "${{" stays as it is. To write "${{" literally, use
//     ${{ '${{' }}. An expression ends at the first "}}" outside quotes and braces.
//   - Reading what is not there is an error, not null: a missing field or node
//     (`nodes.fetch.url` when fetch is not a parent or has no url), an index out of range,
//     a field of null, an env variable the worker does not allow. `a?.b` reads b as null
//     when a is null or has no b (one step only: write `a?.b?.c`); `x ?? d` then supplies a
//     default, and `"b" in a` and `get(a, "b")` test without failing.
//   - Expressions cannot call Go methods, read the clock (`now()` is disabled, so a retry
//     expands the same way) or anything beyond Vars. Each is at most 4 KiB and 1,000 syntax
//     nodes; one call may handle at most 1,000,000 loop iterations and collection items and
//     64 MiB of text, and no string or value may exceed 8 MiB. Compiled expressions are
//     cached (about 4,096 of them, by source).
//
// Map keys and non-string values are copied as they are. Other Go types (structs, typed
// slices and maps) are copied through JSON, as the definition registry would store them.
// Errors are *ExprError; the first one, in sorted key order, is returned.
func Expand(with map[string]any, v Vars) (map[string]any, error) {
	if with == nil {
		return nil, nil
	}
	x := &expander{vars: v, meter: new(meter)}
	out, err := x.copy("with", with, 0)
	if err != nil {
		return nil, err
	}
	return out.(map[string]any), nil
}

// expander holds the state of one Expand call: the environment, decoded at most once, and the
// budget all its expressions share.
type expander struct {
	vars   Vars
	meter  *meter
	env    *exprEnv
	envErr error
}

// exprEnv is the environment expressions see. Meter is for the calls the compiler inserts.
type exprEnv struct {
	Input any               `expr:"input"`
	Nodes map[string]any    `expr:"nodes"`
	RunID string            `expr:"run_id"`
	Env   map[string]string `expr:"env"`
	Item  any               `expr:"item"`
	Index int               `expr:"index"`
	Meter *meter            `expr:"__jetflow_meter"`
}

func (x *expander) environment() (*exprEnv, error) {
	if x.env != nil || x.envErr != nil {
		return x.env, x.envErr
	}
	env := &exprEnv{Nodes: make(map[string]any, len(x.vars.Nodes)), RunID: x.vars.RunID, Env: x.vars.Env, Index: x.vars.Index, Meter: x.meter}
	if env.Env == nil {
		env.Env = map[string]string{}
	}
	if len(bytes.TrimSpace(x.vars.Item)) > 0 {
		if err := json.Unmarshal(x.vars.Item, &env.Item); err != nil {
			x.envErr = fmt.Errorf("the item is not valid JSON: %s", oneLine(err.Error(), 200))
			return nil, x.envErr
		}
	}
	if len(bytes.TrimSpace(x.vars.Input)) > 0 {
		if err := json.Unmarshal(x.vars.Input, &env.Input); err != nil {
			x.envErr = fmt.Errorf("the run input is not valid JSON: %s", oneLine(err.Error(), 200))
			return nil, x.envErr
		}
	}
	names := make([]string, 0, len(x.vars.Nodes))
	for name := range x.vars.Nodes {
		names = append(names, name)
	}
	sort.Strings(names) // so that the first bad output reported is always the same
	for _, name := range names {
		raw := x.vars.Nodes[name]
		var out any
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := json.Unmarshal(raw, &out); err != nil {
				x.envErr = fmt.Errorf("the output of node %q is not valid JSON: %s", oneLine(name, 80), oneLine(err.Error(), 200))
				return nil, x.envErr
			}
		}
		env.Nodes[name] = out
	}
	x.env = env
	return env, nil
}

// copy deep-copies v, expanding strings; key is where v sits, for errors.
func (x *expander) copy(key string, v any, depth int) (any, error) {
	if depth > maxValueDepth {
		return nil, &ExprError{Key: key, Err: fmt.Errorf("nested more than %d deep", maxValueDepth)}
	}
	switch t := v.(type) {
	case nil, bool, float64, int, int64, uint64:
		return t, nil
	case string:
		return x.expandString(key, t)
	case map[string]any:
		out := make(map[string]any, len(t))
		for _, k := range sortedKeys(t) {
			c, err := x.copy(key+"."+k, t[k], depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := x.copy(key+"["+strconv.Itoa(i)+"]", e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case []string:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := x.expandString(key+"["+strconv.Itoa(i)+"]", e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]string:
		m := make(map[string]any, len(t))
		for k, s := range t {
			m[k] = s
		}
		return x.copy(key, m, depth)
	}
	if !composite(v) {
		return v, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &ExprError{Key: key, Err: fmt.Errorf("cannot be written as JSON: %s", oneLine(err.Error(), 200))}
	}
	var j any
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, &ExprError{Key: key, Err: err}
	}
	return x.copy(key, j, depth)
}

// composite reports whether v is a Go value other than the JSON-decoded kinds that could hold
// strings: a struct, a typed slice or map, or a pointer to one.
func composite(v any) bool {
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct, reflect.Pointer, reflect.Interface:
		return true
	}
	return false
}

// expandString evaluates the expressions in s.
func (x *expander) expandString(key, s string) (any, error) {
	if !strings.Contains(s, exprOpen) {
		return s, nil
	}
	parts, err := splitTemplate(s)
	if err != nil {
		return nil, &ExprError{Key: key, Expr: shownExpr(err.raw), Err: err.err}
	}
	if len(parts) == 1 && parts[0].isExpr {
		v, err := x.eval(parts[0])
		if err != nil {
			return nil, &ExprError{Key: key, Expr: shownExpr(parts[0].raw), Err: err}
		}
		return v, nil
	}
	var b strings.Builder
	for _, p := range parts {
		if !p.isExpr {
			b.WriteString(p.text)
			continue
		}
		v, err := x.eval(p)
		if err == nil {
			var text string
			text, err = formatValue(v)
			if err == nil && b.Len()+len(text) > maxValueBytes {
				err = errTooBig(b.Len() + len(text))
			}
			if err == nil {
				err = x.meter.work(len(text))
			}
			b.WriteString(text)
		}
		if err != nil {
			return nil, &ExprError{Key: key, Expr: shownExpr(p.raw), Err: err}
		}
	}
	return b.String(), nil
}

func shownExpr(raw string) string {
	s := oneLine(raw, maxShownExprLen)
	if strings.HasSuffix(s, "…") && strings.HasPrefix(raw, exprOpen) {
		s += exprClose
	}
	return s
}

// formatValue writes v into a mixed string: strings as they are, others as compact JSON.
func formatValue(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("cannot write the value as JSON: %s", oneLine(err.Error(), 200))
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// part is one piece of a template: literal text, or an expression.
type part struct {
	text   string // literal text
	src    string // expression source, trimmed
	raw    string // "${{ … }}" as written
	isExpr bool
}

type templateError struct {
	raw string
	err error
}

// splitTemplate cuts s into literal text and expressions.
func splitTemplate(s string) ([]part, *templateError) {
	var parts []part
	for s != "" {
		i := strings.Index(s, exprOpen)
		if i < 0 {
			parts = append(parts, part{text: s})
			break
		}
		if i > 0 {
			parts = append(parts, part{text: s[:i]})
		}
		body := s[i+len(exprOpen):]
		j, err := exprEnd(body)
		if err != nil {
			return nil, &templateError{raw: s[i:], err: err}
		}
		raw := s[i : i+len(exprOpen)+j+len(exprClose)]
		src := strings.TrimSpace(body[:j])
		switch {
		case src == "":
			return nil, &templateError{raw: raw, err: errors.New("the expression is empty")}
		case len(src) > maxExprBytes:
			return nil, &templateError{raw: raw, err: fmt.Errorf("the expression is %d bytes; at most %d are allowed", len(src), maxExprBytes)}
		}
		parts = append(parts, part{src: src, raw: raw, isExpr: true})
		s = body[j+len(exprClose):]
	}
	return parts, nil
}

// exprEnd returns the index in b of the "}}" that closes an expression: the first one outside
// string literals and braces.
func exprEnd(b string) (int, error) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"', '\'':
			for i++; i < len(b) && b[i] != c; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return 0, fmt.Errorf("unterminated string in the expression; close it with %c", c)
			}
		case '`':
			k := strings.IndexByte(b[i+1:], '`')
			if k < 0 {
				return 0, errors.New("unterminated string in the expression; close it with `")
			}
			i += k + 1
		case '{':
			depth++
		case '}':
			if depth > 0 {
				depth--
			} else if i+1 < len(b) && b[i+1] == '}' {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("unterminated %q: close it with %q", exprOpen, exprClose)
}

// eval runs one expression and returns its value as a JSON value.
func (x *expander) eval(p part) (any, error) {
	prog, err := compileExpr(p.src)
	if err != nil {
		return nil, err
	}
	env, err := x.environment()
	if err != nil {
		return nil, err
	}
	out, err := expr.Run(prog, env)
	if err != nil {
		return nil, exprMessage(err)
	}
	return jsonValue(out, x.meter)
}

// exprMessage turns an expr error (message, source snippet and caret on several lines) into
// a one-line error, keeping the cause for errors.Is and errors.As.
func exprMessage(err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	msg := fe.Message
	if msg == "memory budget exceeded" {
		msg = fmt.Sprintf("the expression builds too much (over expr's memory budget of %d items)", conf.DefaultMemoryBudget)
	}
	if strings.HasPrefix(msg, "unknown name ") {
		msg += " (expressions can read input, nodes, run_id and env)"
	}
	if fe.Prev != nil {
		return &wrapped{msg: msg, err: fe.Prev}
	}
	if fe.Snippet != "" {
		msg += fmt.Sprintf(" (at column %d)", fe.Column+1)
	}
	return errors.New(msg)
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// jsonValue turns an expression's result into a JSON value (float64 numbers, map[string]any,
// []any), checking its size.
func jsonValue(v any, m *meter) (any, error) {
	switch t := v.(type) {
	case nil, bool:
		return t, nil
	case string:
		if len(t) > maxValueBytes {
			return nil, errTooBig(len(t))
		}
		return t, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, fmt.Errorf("the value %v cannot be written as JSON", t)
		}
		return t, nil
	case int:
		return float64(t), nil
	}
	n, err := jsonSize(v, false)
	if err != nil {
		return nil, err
	}
	if err := m.work(n); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("the value cannot be written as JSON: %s", oneLine(err.Error(), 200))
	}
	if b.Len() > maxValueBytes {
		return nil, errTooBig(b.Len())
	}
	var out any
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		return nil, err
	}
	return out, nil
}

func errTooBig(n int) error {
	return fmt.Errorf("the value is %d bytes or more; at most %d are allowed", n, maxValueBytes)
}

// jsonSize estimates the JSON size of v (indented by two spaces per level when indent is
// set) and fails as soon as it passes maxValueBytes, so huge values are refused before they
// are written out. Strings count their bytes, not their escapes.
func jsonSize(v any, indent bool) (int, error) {
	s := sizer{indent: indent}
	if err := s.walk(reflect.ValueOf(v), 0); err != nil {
		return 0, err
	}
	return s.n, nil
}

type sizer struct {
	n      int
	indent bool
}

func (s *sizer) add(n int) error {
	s.n += n
	if s.n > maxValueBytes {
		return errTooBig(s.n)
	}
	return nil
}

// item counts the separator, newline and indentation of one element at depth.
func (s *sizer) item(depth int) error {
	if s.indent {
		return s.add(2 + 2*depth)
	}
	return s.add(1)
}

func (s *sizer) walk(v reflect.Value, depth int) error {
	if depth > maxValueDepth {
		return fmt.Errorf("the value is nested more than %d deep", maxValueDepth)
	}
	if !v.IsValid() {
		return s.add(4)
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return s.add(4)
		}
		return s.walk(v.Elem(), depth)
	case reflect.String:
		return s.add(v.Len() + 2)
	case reflect.Bool:
		return s.add(5)
	case reflect.Slice, reflect.Array:
		if err := s.add(2); err != nil {
			return err
		}
		for i := range v.Len() {
			if err := s.item(depth + 1); err != nil {
				return err
			}
			if err := s.walk(v.Index(i), depth+1); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if err := s.add(2); err != nil {
			return err
		}
		it := v.MapRange()
		for it.Next() {
			if err := s.item(depth + 1); err != nil {
				return err
			}
			if err := s.walk(it.Key(), depth+1); err != nil {
				return err
			}
			if err := s.add(2); err != nil {
				return err
			}
			if err := s.walk(it.Value(), depth+1); err != nil {
				return err
			}
		}
		return nil
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return s.add(40)
		}
		if err := s.add(2); err != nil {
			return err
		}
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			if err := s.item(depth + 1); err != nil {
				return err
			}
			if err := s.add(len(v.Type().Field(i).Name) + 4); err != nil {
				return err
			}
			if err := s.walk(v.Field(i), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return s.add(24) // numbers and anything else short
}

// meter is the budget of one Expand call, shared by its expressions.
type meter struct {
	steps int
	bytes int
}

func (m *meter) step(n int) error {
	m.steps += n
	if m.steps > maxExprSteps {
		return fmt.Errorf("the expressions do too much work: over %d loop iterations and items", maxExprSteps)
	}
	return nil
}

func (m *meter) work(n int) error {
	m.bytes += n
	if m.bytes > maxExprWork {
		return fmt.Errorf("the expressions handle too much text: over %d bytes", maxExprWork)
	}
	return nil
}

// use charges v, a value an operator or builtin is about to work through: its bytes for a
// string, its length for a collection.
func (m *meter) use(v any) error {
	switch t := v.(type) {
	case nil, bool, float64, int:
		return nil
	case string:
		return m.work(len(t))
	case []any:
		return m.step(len(t))
	case map[string]any:
		return m.step(len(t))
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return m.step(rv.Len())
	case reflect.String:
		return m.work(rv.Len())
	}
	return nil
}

// The expression compiler and its cache.

type compiled struct {
	prog *vm.Program
	err  error
}

// progCache keeps compiled expressions by source. It holds about max entries: when full it is
// emptied, which keeps it simple and bounded under any churn of definitions.
type progCache struct {
	m   sync.Map // source → compiled
	n   atomic.Int64
	max int64
}

func (c *progCache) get(src string) (compiled, bool) {
	v, ok := c.m.Load(src)
	if !ok {
		return compiled{}, false
	}
	return v.(compiled), true
}

func (c *progCache) put(src string, p compiled) {
	if c.n.Load() >= c.max {
		c.m.Clear()
		c.n.Store(0)
	}
	if _, loaded := c.m.LoadOrStore(src, p); !loaded {
		c.n.Add(1)
	}
}

var progs = &progCache{max: maxCachedProgs}

func compileExpr(src string) (*vm.Program, error) {
	if c, ok := progs.get(src); ok {
		return c.prog, c.err
	}
	prog, err := expr.Compile(src, exprOptions()...)
	if err != nil {
		err = exprMessage(err)
	}
	progs.put(src, compiled{prog, err})
	return prog, err
}

func exprOptions() []expr.Option {
	names := map[*ast.MemberNode]string{}
	return []expr.Option{
		expr.Env(exprEnv{}),
		expr.AsAny(),
		expr.MaxNodes(maxExprNodes),
		expr.DisableBuiltin("now"),
		expr.Function(fnGet, metered(func(m *meter, args []any) (any, error) { return fetchArgs(m, args, false) })),
		expr.Function(fnGetOptional, metered(func(m *meter, args []any) (any, error) { return fetchArgs(m, args, true) })),
		expr.Function(fnMethod, func(args ...any) (any, error) {
			name, _ := args[0].(string)
			return nil, fmt.Errorf("cannot call the method %s(): call functions instead, such as upper(x)", name)
		}),
		expr.Function(fnAdd, metered(add)),
		expr.Function(fnUse, metered(func(m *meter, args []any) (any, error) {
			if len(args) != 1 {
				return nil, errBadCall
			}
			return args[0], m.use(args[0])
		})),
		expr.Function("repeat", metered(repeatFn)),
		expr.Function("join", metered(joinFn)),
		expr.Function("replace", metered(replaceFn)),
		expr.Function("toJSON", metered(toJSONFn)),
		expr.Function("string", metered(stringFn)),
		expr.Function("concat", metered(concatFn)),
		expr.Function("flatten", metered(flattenFn)),
		expr.Patch(memberNames(names)),
		expr.Patch(&guard{names: names}),
	}
}

// meteredFuncs are called with the meter as their first argument, inserted by guard.
var meteredFuncs = map[string]bool{
	fnGet: true, fnGetOptional: true, fnAdd: true, fnUse: true, "repeat": true, "join": true, "replace": true,
	"toJSON": true, "string": true, "concat": true, "flatten": true,
}

var errBadCall = errors.New("wrong number or type of arguments")

func metered(f func(m *meter, args []any) (any, error)) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if len(args) == 0 {
			return nil, errBadCall
		}
		m, ok := args[0].(*meter)
		if !ok || m == nil {
			return nil, errBadCall
		}
		return f(m, args[1:])
	}
}

// memberNames records, before guard rewrites the tree, how each member access's object is
// written ("nodes.fetch" in nodes.fetch.url), for error messages.
type memberNames map[*ast.MemberNode]string

func (r memberNames) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.MemberNode); ok {
		r[n] = oneLine(n.Node.String(), 80)
	}
}

// guard rewrites an expression so that it fails instead of reading nothing and is metered:
// member access goes through fnGet (or fnGetOptional for ?.), '+' through fnAdd, the
// operands of scanning operators and the arguments of builtins through fnUse, and metered
// functions receive the meter.
type guard struct {
	names memberNames
}

func (g *guard) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		if n.Method {
			return
		}
		fn := fnGet
		if n.Optional {
			fn = fnGetOptional
		}
		*node = call(n, fn, meterIdent(), n.Node, n.Property, &ast.StringNode{Value: g.names[n]})
	case *ast.BinaryNode:
		switch n.Operator {
		case "+":
			*node = call(n, fnAdd, meterIdent(), n.Left, n.Right)
		case "contains", "startsWith", "endsWith", "matches", "in", "==", "!=", "<", "<=", ">", ">=":
			n.Left = call(n.Left, fnUse, meterIdent(), n.Left)
			n.Right = call(n.Right, fnUse, meterIdent(), n.Right)
		}
	case *ast.BuiltinNode:
		for i, a := range n.Arguments {
			if _, ok := a.(*ast.PredicateNode); !ok {
				n.Arguments[i] = call(a, fnUse, meterIdent(), a)
			}
		}
	case *ast.CallNode:
		switch c := n.Callee.(type) {
		case *ast.IdentifierNode:
			if meteredFuncs[c.Value] && !strings.HasPrefix(c.Value, "__jetflow_") {
				n.Arguments = append([]ast.Node{meterIdent()}, n.Arguments...)
			}
		case *ast.MemberNode:
			name := "?"
			if p, ok := c.Property.(*ast.StringNode); ok {
				name = p.Value
			}
			*node = call(n, fnMethod, &ast.StringNode{Value: oneLine(name, 80)})
		}
	}
}

func meterIdent() ast.Node { return &ast.IdentifierNode{Value: meterVar} }

// call returns a call of fn with args, placed where at is in the source.
func call(at ast.Node, fn string, args ...ast.Node) ast.Node {
	c := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: args}
	c.SetLocation(at.Location())
	c.Callee.SetLocation(at.Location())
	return c
}

// fetchArgs reads (object, key, description).
func fetchArgs(m *meter, args []any, optional bool) (any, error) {
	if len(args) != 3 {
		return nil, errBadCall
	}
	what, _ := args[2].(string)
	if what == "" {
		what = "the value"
	}
	return fetch(m, args[0], args[1], what, optional)
}

// fetch reads key of obj: a field of an object or an item of an array. Reading what is not
// there is an error, or null when optional.
func fetch(m *meter, obj, key any, what string, optional bool) (any, error) {
	miss := func(err error) (any, error) {
		if optional {
			return nil, nil
		}
		return nil, err
	}
	switch o := obj.(type) {
	case nil:
		return miss(fmt.Errorf("%s is null, so it has no %s", what, keyName(key)))
	case map[string]any:
		return fetchField(o, key, what, miss)
	case map[string]string:
		return fetchField(o, key, what, miss)
	case []any:
		i, ok := intKey(key)
		if !ok {
			not := typeName(key)
			if _, ok := key.(string); ok {
				not = keyName(key)
			}
			return nil, fmt.Errorf("%s is an array: read it with a whole number, not %s", what, not)
		}
		if i < 0 {
			i += len(o)
		}
		if i < 0 || i >= len(o) {
			return miss(fmt.Errorf("%s has %d item%s, so it has no item %v", what, len(o), plural(len(o)), key))
		}
		return o[i], nil
	case string:
		i, ok := intKey(key)
		if !ok {
			return nil, fmt.Errorf("%s is a string, so it has no %s", what, keyName(key))
		}
		if err := m.work(len(o)); err != nil {
			return nil, err
		}
		r := []rune(o)
		if i < 0 {
			i += len(r)
		}
		if i < 0 || i >= len(r) {
			return miss(fmt.Errorf("%s has %d character%s, so it has no character %v", what, len(r), plural(len(r)), key))
		}
		return string(r[i]), nil
	case bool, float64, int:
		return nil, fmt.Errorf("%s is %s, so it has no %s", what, typeName(obj), keyName(key))
	}
	rv := reflect.ValueOf(obj)
	if rv.Kind() == reflect.Map {
		kv := reflect.ValueOf(key)
		if !kv.IsValid() || !kv.Type().AssignableTo(rv.Type().Key()) {
			return nil, fmt.Errorf("%s cannot be read with the key %s", what, keyName(key))
		}
		v := rv.MapIndex(kv)
		if !v.IsValid() {
			return miss(fmt.Errorf("%s has no %s", what, keyName(key)))
		}
		return v.Interface(), nil
	}
	return fetchOther(obj, key, what, optional)
}

// fetchOther leaves the rest (strings by index, arrays built in the expression, the
// environment itself) to expr, turning its panic into an error.
func fetchOther(obj, key any, what string, optional bool) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			if optional {
				v, err = nil, nil
				return
			}
			v, err = nil, fmt.Errorf("%s has no %s", what, keyName(key))
		}
	}()
	return runtime.Fetch(obj, key), nil
}

// fetchField reads the field key of the object o; miss reports a field that is not there.
func fetchField[V any](o map[string]V, key any, what string, miss func(error) (any, error)) (any, error) {
	k, ok := key.(string)
	if !ok {
		return nil, fmt.Errorf("%s is an object: read it with a string key, not %s", what, typeName(key))
	}
	v, ok := o[k]
	if !ok {
		return miss(missingKey(what, k, o))
	}
	return v, nil
}

// missingKey says that key is not in m, naming the keys that are.
func missingKey[V any](what, key string, m map[string]V) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	have := "it is empty"
	if len(keys) > 0 {
		const show = 10
		list := make([]string, 0, show)
		for _, k := range keys[:min(len(keys), show)] {
			list = append(list, strconv.Quote(oneLine(k, 40)))
		}
		have = "it has " + strings.Join(list, ", ")
		if len(keys) > show {
			have += fmt.Sprintf(" and %d more", len(keys)-show)
		}
	}
	switch what {
	case "nodes":
		return fmt.Errorf("no node %q in nodes (%s; a node sees only its parents' outputs)", oneLine(key, 80), have)
	case "env":
		return fmt.Errorf("no variable %q in env (%s; the worker decides which variables are allowed)", oneLine(key, 80), have)
	}
	return fmt.Errorf("%s has no field %q (%s)", what, oneLine(key, 80), have)
}

func intKey(key any) (int, bool) {
	switch k := key.(type) {
	case int:
		return k, true
	case float64:
		if k == math.Trunc(k) && math.Abs(k) < 1<<53 {
			return int(k), true
		}
	case int64:
		return int(k), true
	}
	return 0, false
}

func keyName(key any) string {
	switch k := key.(type) {
	case string:
		return fmt.Sprintf("field %q", oneLine(k, 80))
	case int, int64, float64:
		return fmt.Sprintf("item %v", k)
	}
	return "such key (" + typeName(key) + ")"
}

// typeName names v's type as JSON would.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("a %T", v)
}

// The metered functions: '+' and the builtins that can build values much larger than their
// arguments, each checking the size before building.

func add(m *meter, args []any) (any, error) {
	if len(args) != 2 {
		return nil, errBadCall
	}
	if a, ok := args[0].(string); ok {
		if b, ok := args[1].(string); ok {
			n := len(a) + len(b)
			if n > maxValueBytes {
				return nil, errTooBig(n)
			}
			return a + b, m.work(n)
		}
	}
	return runtime.Add(args[0], args[1]), nil
}

func repeatFn(m *meter, args []any) (any, error) {
	if len(args) != 2 {
		return nil, errBadCall
	}
	s, ok := args[0].(string)
	n, ok2 := intKey(args[1])
	if !ok || !ok2 || n < 0 {
		return nil, errors.New("repeat needs a string and a count of 0 or more")
	}
	if len(s) > 0 && n > maxValueBytes/len(s) {
		return nil, errTooBig(maxValueBytes + 1)
	}
	if err := m.work(len(s) * n); err != nil {
		return nil, err
	}
	return strings.Repeat(s, n), nil
}

func joinFn(m *meter, args []any) (any, error) {
	if len(args) != 1 && len(args) != 2 {
		return nil, errBadCall
	}
	glue := ""
	if len(args) == 2 {
		g, ok := args[1].(string)
		if !ok {
			return nil, errors.New("join needs a string to join with")
		}
		glue = g
	}
	var strs []string
	switch a := args[0].(type) {
	case []string:
		strs = a
	case []any:
		strs = make([]string, len(a))
		for i, e := range a {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("join needs an array of strings; item %d is %s", i, typeName(e))
			}
			strs[i] = s
		}
	default:
		return nil, fmt.Errorf("join needs an array of strings, not %s", typeName(args[0]))
	}
	if err := m.step(len(strs)); err != nil {
		return nil, err
	}
	n := 0
	for i, s := range strs {
		n += len(s)
		if i > 0 {
			n += len(glue)
		}
		if n > maxValueBytes {
			return nil, errTooBig(n)
		}
	}
	if err := m.work(n); err != nil {
		return nil, err
	}
	return strings.Join(strs, glue), nil
}

func replaceFn(m *meter, args []any) (any, error) {
	if len(args) != 3 && len(args) != 4 {
		return nil, errBadCall
	}
	s, ok1 := args[0].(string)
	old, ok2 := args[1].(string)
	repl, ok3 := args[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return nil, errors.New("replace needs three strings: the text, what to replace and the replacement")
	}
	limit := -1
	if len(args) == 4 {
		n, ok := intKey(args[3])
		if !ok {
			return nil, errors.New("replace needs a whole number as its count")
		}
		limit = n
	}
	if err := m.work(len(s)); err != nil {
		return nil, err
	}
	count := 0
	if old == "" {
		count = utf8.RuneCountInString(s) + 1
	} else {
		count = strings.Count(s, old)
	}
	if limit >= 0 && limit < count {
		count = limit
	}
	if grow := len(repl) - len(old); grow > 0 && count > 0 {
		if count > (maxValueBytes-len(s))/grow {
			return nil, errTooBig(maxValueBytes + 1)
		}
		if err := m.work(count * grow); err != nil {
			return nil, err
		}
	}
	return strings.Replace(s, old, repl, limit), nil
}

func toJSONFn(m *meter, args []any) (any, error) {
	if len(args) != 1 {
		return nil, errBadCall
	}
	n, err := jsonSize(args[0], true)
	if err != nil {
		return nil, err
	}
	if err := m.work(n); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(args[0], "", "  ")
	if err != nil {
		return nil, fmt.Errorf("toJSON: %s", oneLine(err.Error(), 200))
	}
	return string(b), nil
}

func stringFn(m *meter, args []any) (any, error) {
	if len(args) != 1 {
		return nil, errBadCall
	}
	if s, ok := args[0].(string); ok {
		return s, nil
	}
	n, err := jsonSize(args[0], false)
	if err != nil {
		return nil, err
	}
	if err := m.work(n); err != nil {
		return nil, err
	}
	return fmt.Sprintf("%v", args[0]), nil
}

func concatFn(m *meter, args []any) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("concat needs at least one array")
	}
	total := 0
	for _, a := range args {
		v := reflect.ValueOf(a)
		if v.Kind() != reflect.Slice && v.Kind() != reflect.Array {
			return nil, fmt.Errorf("concat needs arrays, not %s", typeName(a))
		}
		total += v.Len()
		if err := m.step(v.Len()); err != nil {
			return nil, err
		}
	}
	out := make([]any, 0, total)
	for _, a := range args {
		v := reflect.ValueOf(a)
		for i := range v.Len() {
			out = append(out, v.Index(i).Interface())
		}
	}
	return out, nil
}

func flattenFn(m *meter, args []any) (any, error) {
	if len(args) != 1 {
		return nil, errBadCall
	}
	v := reflect.ValueOf(args[0])
	if v.Kind() != reflect.Slice && v.Kind() != reflect.Array {
		return nil, fmt.Errorf("flatten needs an array, not %s", typeName(args[0]))
	}
	var out []any
	var walk func(v reflect.Value, depth int) error
	walk = func(v reflect.Value, depth int) error {
		if depth > maxValueDepth {
			return fmt.Errorf("the value is nested more than %d deep", maxValueDepth)
		}
		if err := m.step(v.Len()); err != nil {
			return err
		}
		for i := range v.Len() {
			e := v.Index(i)
			for e.Kind() == reflect.Interface && !e.IsNil() {
				e = e.Elem()
			}
			if e.Kind() == reflect.Slice || e.Kind() == reflect.Array {
				if err := walk(e, depth+1); err != nil {
					return err
				}
				continue
			}
			out = append(out, e.Interface())
		}
		return nil
	}
	if err := walk(v, 0); err != nil {
		return nil, err
	}
	if out == nil {
		out = []any{}
	}
	return out, nil
}
