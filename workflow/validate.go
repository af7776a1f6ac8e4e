package workflow

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	exprast "github.com/expr-lang/expr/ast"
	exprparser "github.com/expr-lang/expr/parser"
	"github.com/goccy/go-yaml/parser"
)

// Problem is one thing wrong with a definition. Path is a YAML path such as
// "$.nodes[2].needs[0]"; Line and Col are set when the definition came from a file.
type Problem struct {
	Path string
	Line int
	Col  int
	Msg  string
}

// ValidationError lists what is wrong with a definition. Its Error is one line: the first
// problem with its place, and how many more there are.
type ValidationError struct {
	File     string
	Problems []Problem
}

// Error implements error.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid workflow"
	}
	s := e.where(e.Problems[0]) + e.Problems[0].Msg
	if n := len(e.Problems) - 1; n > 0 {
		s += fmt.Sprintf(" (and %d more problem%s)", n, plural(n))
	}
	return s
}

func (e *ValidationError) where(p Problem) string {
	file := e.File
	switch {
	case file != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d:%d: ", file, p.Line, p.Col)
	case file != "":
		return file + ": "
	case p.Line > 0:
		return fmt.Sprintf("line %d:%d: ", p.Line, p.Col)
	case p.Path != "":
		return p.Path + ": "
	}
	return ""
}

// Lines returns every problem on its own line, with its place.
func (e *ValidationError) Lines() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = e.where(p) + p.Msg
	}
	return out
}

// Locate returns the problems of e placed in the definition file they were found in: File
// set, and each problem's Line and Col found from its Path, as Parse does. Use it for what
// is checked after Parse, such as CheckSubflows' problems; data is the file's content.
func (e *ValidationError) Locate(file string, data []byte) (out *ValidationError) {
	out = &ValidationError{File: file, Problems: slices.Clone(e.Problems)}
	defer func() { // go-yaml panics on some malformed input: keep the problems unplaced
		if r := recover(); r != nil {
			out = &ValidationError{File: file, Problems: slices.Clone(e.Problems)}
		}
	}()
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return out
	}
	// A nodes mapping becomes the list Parse decoded, so that $.nodes[i] paths find their
	// tokens.
	if _, _, ps := nodesAsList(firstBody(f)); len(ps) > 0 {
		return out
	}
	for i := range out.Problems {
		if p := &out.Problems[i]; p.Line == 0 && p.Path != "" {
			p.Line, p.Col = position(f, p.Path)
		}
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// BuiltinTypes lists the node types jetflow ships, with the keys their `with` accepts.
var builtinWith = map[string][]string{
	"exec":  {"command", "env", "dir", "permanent_exit_codes"},
	"sleep": {"duration"},
	"noop":  {"output"},
	"http":  {"method", "url", "headers", "body", "timeout", "expect_status"},
	"llm":   {"model", "messages", "max_tokens", "temperature", "json", "cache", "providers", "max_wait", "provider_attempts"},
	// SubflowType runs another workflow as a child run (DESIGN.md "Control flow").
	SubflowType: {"workflow", "input"},
	// WaitType waits for a signal sent with `jetflow runs signal`.
	WaitType: {"signal", "timeout", "on_timeout"},
	// ServiceType sends a NATS request to a service in any language.
	ServiceType: {"subject", "timeout"},
}

// IsBuiltin reports whether typ is one of jetflow's built-in node types.
func IsBuiltin(typ string) bool { _, ok := builtinWith[typ]; return ok }

// BuiltinTypes returns the names of the built-in node types, sorted.
func BuiltinTypes() []string {
	out := make([]string, 0, len(builtinWith))
	for t := range builtinWith {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// ValidateOptions tunes Validate.
type ValidateOptions struct {
	// KnownType, when set, reports whether a node type has a handler; nodes of other types
	// are refused. Built-in types are always known.
	KnownType func(typ string) bool
}

// Validate checks the definition: names, duplicates, unknown parents, cycles, settings in
// range, and `with` keys of built-in types. It returns a *ValidationError or nil.
func (w *Workflow) Validate(opts ValidateOptions) error {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if w.Name == "" {
		add("$.name", "the workflow has no name: add `name: <name>`")
	} else if !ValidName(w.Name) {
		add("$.name", "workflow name %q: use letters, digits, '_' and '-' only", w.Name)
	}
	if len(w.Nodes) == 0 {
		add("$.nodes", "the workflow has no nodes")
	}
	if on := w.On; on != nil {
		switch {
		case !validStreamName(on.Stream):
			add("$.on.stream", "on.stream %q: name an existing JetStream stream (no spaces, dots, '*' or '>')", on.Stream)
		case on.Subject != "" && !validSubjectFilter(on.Subject):
			add("$.on.subject", "on.subject %q: a subject filter such as orders.> (tokens separated by dots, '*' and '>' as wildcards)", on.Subject)
		case len(w.Name) > MaxTriggeredName:
			add("$.name", "a workflow with a trigger has run IDs <name>-<stream seq>: keep its name to %d characters", MaxTriggeredName)
		}
	}
	if b := w.Budget; b != nil && !(b.USD > 0 && b.USD < 1e9) { // NaN fails too
		add("$.budget.usd", "budget.usd %v: give a positive amount in USD, such as 5", b.USD)
	}
	if len(w.Nodes) > MaxNodes {
		add("$.nodes", "the workflow has %d nodes; at most %d are allowed", len(w.Nodes), MaxNodes)
		return &ValidationError{Problems: ps}
	}
	seen := make(map[string]int, len(w.Nodes))
	capOf := map[string]int{} // node type → the first node's concurrency cap
	for i, n := range w.Nodes {
		at := fmt.Sprintf("$.nodes[%d]", i)
		if n == nil {
			add(at, "node %d is empty", i)
			continue
		}
		if n.Concurrency > 0 {
			if c, ok := capOf[n.Type]; ok && c != n.Concurrency {
				add(at+".concurrency", "concurrency %d: another node of type %q caps it at %d (the cap is the type's, across the cluster)", n.Concurrency, n.Type, c)
			} else {
				capOf[n.Type] = n.Concurrency
			}
		}
		switch {
		case n.Name == "":
			add(at, "node %d has no name", i)
		case !ValidName(n.Name):
			add(at+".name", "node name %q: use letters, digits, '_' and '-' only", n.Name)
		default:
			if j, dup := seen[n.Name]; dup {
				add(at+".name", "duplicate node name %q (also node %d)", n.Name, j)
			} else {
				seen[n.Name] = i
			}
		}
		w.validateNode(n, at, opts, add)
	}
	if len(ps) == 0 {
		for i, n := range w.Nodes {
			for j, p := range n.Needs {
				if _, ok := seen[p]; !ok {
					add(fmt.Sprintf("$.nodes[%d].needs[%d]", i, j), "node %q needs %q, which is not a node of this workflow", n.Name, p)
				} else if p == n.Name {
					add(fmt.Sprintf("$.nodes[%d].needs[%d]", i, j), "node %q needs itself", n.Name)
				}
			}
			if len(n.Needs) != len(uniq(n.Needs)) {
				add(fmt.Sprintf("$.nodes[%d].needs", i), "node %q lists a parent twice", n.Name)
			}
		}
	}
	if len(ps) == 0 {
		if cyc := w.cycle(); cyc != nil {
			add(fmt.Sprintf("$.nodes[%d].needs", seen[cyc[0]]), "cycle: %s", strings.Join(cyc, " → "))
		}
	}
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	w.index = nil
	return nil
}

func uniq(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

func (w *Workflow) validateNode(n *Node, at string, opts ValidateOptions, add func(string, string, ...any)) {
	switch {
	case n.Type == "":
		add(at, "node %q has no type", n.Name)
	case !ValidName(n.Type):
		add(at+".type", "node type %q: use letters, digits, '_' and '-' only", n.Type)
	case n.Type == StartConsumerType:
		add(at+".type", "node type %q is reserved: its consumer name takes the start requests; rename the type", n.Type)
	case !IsBuiltin(n.Type) && opts.KnownType != nil && !opts.KnownType(n.Type):
		add(at+".type", "node %q has unknown type %q (built-in: %s)", n.Name, n.Type, strings.Join(BuiltinTypes(), ", "))
	}
	if keys, ok := builtinWith[n.Type]; ok {
		for _, k := range sortedKeys(n.With) {
			if !slices.Contains(keys, k) {
				add(at+".with."+k, "%s node %q: unknown setting %q under with (allowed: %s)", n.Type, n.Name, k, strings.Join(keys, ", "))
			}
		}
		switch n.Type {
		case "exec":
			switch c := n.With["command"].(type) {
			case nil:
				add(at+".with", "exec node %q needs with.command (a shell line or a list of arguments)", n.Name)
			case string:
				if strings.TrimSpace(c) == "" {
					add(at+".with.command", "exec node %q: command is empty", n.Name)
				}
			case []any:
				if len(c) == 0 {
					add(at+".with.command", "exec node %q: command is empty", n.Name)
				}
			default:
				add(at+".with.command", "exec node %q: command must be a string or a list of strings", n.Name)
			}
		case "sleep":
			s, ok := n.With["duration"].(string)
			if !ok {
				add(at+".with", "sleep node %q needs with.duration such as \"30s\"", n.Name)
			} else if d, err := time.ParseDuration(s); err != nil || d <= 0 {
				add(at+".with.duration", "sleep node %q: duration %q must be positive, such as \"30s\"", n.Name, s)
			}
		case "llm":
			validateLLM(n, at, add)
		case WaitType:
			validateWait(n, at, add)
		case ServiceType:
			switch subj := n.With["subject"].(type) {
			case string:
				if !strings.Contains(subj, exprOpen) && (!validSubjectFilter(subj) || strings.ContainsAny(subj, "*>")) {
					add(at+".with.subject", "service node %q: subject %q: a NATS subject such as svc.summarize (no wildcards)", n.Name, subj)
				}
			default:
				add(at+".with", "service node %q needs with.subject: the NATS subject the service answers on", n.Name)
			}
			if v, ok := n.With["timeout"]; ok {
				if s, _ := v.(string); s == "" || !validDuration(s) {
					add(at+".with.timeout", "service node %q: timeout %v: a positive duration such as \"2m\"", n.Name, v)
				}
			}
		case SubflowType:
			switch name := n.With["workflow"].(type) {
			case nil:
				add(at+".with", "workflow node %q needs with.workflow: the name of the workflow it runs", n.Name)
			case string:
				if strings.Contains(name, exprOpen) {
					add(at+".with.workflow", "workflow node %q: with.workflow must name the workflow it runs, not hold an expression", n.Name)
				} else if !ValidName(name) {
					add(at+".with.workflow", "workflow node %q: workflow name %q: use letters, digits, '_' and '-' only", n.Name, name)
				}
			default:
				add(at+".with.workflow", "workflow node %q: with.workflow must be a workflow name", n.Name)
			}
		}
	}
	validateControl(n, at, add)
	if _, err := json.Marshal(n.With); err != nil { // e.g. YAML .inf or .nan: the hash would fail
		add(at+".with", "node %q: with cannot be written as JSON (%s)", n.Name, oneLine(err.Error(), 100))
	}
	if r := n.Retry; r != nil {
		if r.MaxAttempts < 0 || r.MaxAttempts > MaxAttemptsLimit {
			add(at+".retry.max_attempts", "retry.max_attempts %d: use 1 to %d", r.MaxAttempts, MaxAttemptsLimit)
		}
		if r.Initial < 0 {
			add(at+".retry.initial", "retry.initial must be positive")
		}
		if r.Max < 0 {
			add(at+".retry.max", "retry.max must be positive")
		}
		if r.Multiplier != 0 && !(r.Multiplier >= 1 && r.Multiplier <= 100) { // NaN fails too
			add(at+".retry.multiplier", "retry.multiplier %v: use 1 to 100", r.Multiplier)
		}
		if r.Jitter != nil && !(*r.Jitter >= 0 && *r.Jitter <= 1) { // NaN fails too
			add(at+".retry.jitter", "retry.jitter %v: use 0 to 1", *r.Jitter)
		}
		if r.Initial > 0 && r.Max > 0 && r.Max < r.Initial {
			add(at+".retry.max", "retry.max (%s) is below retry.initial (%s)", r.Max.D(), r.Initial.D())
		}
	}
	if n.Timeout < 0 {
		add(at+".timeout", "timeout must be positive")
	}
	if b := n.Breaker; b != nil {
		if b.Key != "" && !validKeyName(b.Key) {
			add(at+".breaker.key", "breaker.key %q: use letters, digits and . _ - = only", b.Key)
		}
		if b.Scope != "" && b.Scope != "node" && b.Scope != "type" {
			add(at+".breaker.scope", "breaker.scope %q: use node or type", b.Scope)
		}
		if b.ConsecutiveFailures < 0 || b.ConsecutiveFailures > 1000 {
			add(at+".breaker.consecutive_failures", "breaker.consecutive_failures %d: use 1 to 1000", b.ConsecutiveFailures)
		}
		if b.FailureRatio != 0 && !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
			add(at+".breaker.failure_ratio", "breaker.failure_ratio %v: use a share above 0 and at most 1", b.FailureRatio)
		}
		if b.MinRequests < 0 || (b.FailureRatio > 0) != (b.MinRequests > 0) {
			add(at+".breaker.min_requests", "breaker.failure_ratio and breaker.min_requests go together (min_requests at least 1)")
		}
		if b.OpenFor < 0 {
			add(at+".breaker.open_for", "breaker.open_for must be positive")
		}
		if b.HalfOpenRequests < 0 || b.HalfOpenRequests > 100 {
			add(at+".breaker.half_open_requests", "breaker.half_open_requests %d: use 1 to 100", b.HalfOpenRequests)
		}
	}
	for i, t := range n.Fallback {
		switch {
		case !ValidName(t):
			add(fmt.Sprintf("%s.fallback[%d]", at, i), "fallback type %q: use letters, digits, '_' and '-' only", t)
		case t == n.Type:
			add(fmt.Sprintf("%s.fallback[%d]", at, i), "node %q falls back to its own type %q", n.Name, t)
		case t == SubflowType:
			add(fmt.Sprintf("%s.fallback[%d]", at, i), "node %q: a fallback cannot be a workflow node (fallbacks run in the worker's process); use a node type with a handler", n.Name)
		case !IsBuiltin(t) && opts.KnownType != nil && !opts.KnownType(t):
			add(fmt.Sprintf("%s.fallback[%d]", at, i), "node %q has unknown fallback type %q", n.Name, t)
		}
	}
	if r := n.Rate; r != nil {
		if !(r.PerSecond > 0 && r.PerSecond <= 1e6) {
			add(at+".rate.per_second", "rate.per_second %v: use a number above 0", r.PerSecond)
		}
		if r.Burst < 0 || r.Burst > 1e6 {
			add(at+".rate.burst", "rate.burst %d: use 1 or more", r.Burst)
		}
		if r.Key != "" && !validKeyName(r.Key) {
			add(at+".rate.key", "rate.key %q: use letters, digits and . _ - = only", r.Key)
		}
	}
	if n.Concurrency < 0 || n.Concurrency > MaxConcurrency {
		add(at+".concurrency", "concurrency %d: use 1 to %d (steps of the type in flight across the cluster)", n.Concurrency, MaxConcurrency)
	}
	if n.MaxCrashes < 0 || n.MaxCrashes > 15 {
		add(at+".max_crashes", "max_crashes %d: use 1 to 15", n.MaxCrashes)
	}
}

// validateControl checks a node's control flow (DESIGN.md "Control flow: conditions, maps,
// subflows"): `if` and `for_each` are each one expression that compiles, and so does every
// expression in `with`; only a for_each node's `with` reads item and index; a root node's
// for_each reads only input; expressions read nodes.X only for a parent X; max_parallel is
// in range and goes with for_each.
func validateControl(n *Node, at string, add func(string, string, ...any)) {
	if n.If != "" {
		checkWhole(n, "if", n.If, at, add)
	}
	if n.ForEach != "" {
		if n.Type == SubflowType {
			add(at+".for_each", "node %q: for_each on a workflow node is not supported", n.Name)
		} else {
			checkWhole(n, "for_each", n.ForEach, at, add)
		}
	}
	switch {
	case n.MaxParallel < 0 || n.MaxParallel > MaxParallelLimit:
		add(at+".max_parallel", "node %q: max_parallel %d: use 1 to %d (items of one run in flight at once)", n.Name, n.MaxParallel, MaxParallelLimit)
	case n.MaxParallel != 0 && n.ForEach == "":
		add(at+".max_parallel", "node %q: max_parallel is set without for_each: it bounds a for_each node's items in flight; add for_each or remove max_parallel", n.Name)
	}
	checkWith(n, at, at+".with", n.With, 0, add)
}

// checkWhole checks the `if` or `for_each` (key) of n: one expression, src, that compiles and
// reads what it may.
func checkWhole(n *Node, key, src, at string, add func(string, string, ...any)) {
	path := at + "." + key
	vars, err := CheckExpr(src)
	if err != nil {
		add(path, "node %q: %s: %s: %s", n.Name, key, shownExpr(strings.TrimSpace(src)), oneLine(err.Error(), 300))
		return
	}
	for _, v := range vars {
		switch {
		case v == "item" || v == "index":
			add(path, "node %q: %s reads %s, which only the with of a for_each node can read", n.Name, key, v)
			return
		case key == "for_each" && len(n.Needs) == 0 && v != "input":
			add(path, "node %q: for_each of a root node (no needs) can read only input, not %s: its items are dispatched as the run starts", n.Name, v)
			return
		}
	}
	checkParents(n, key, src, path, add)
}

// checkWith checks the expressions in the `with` value v at path, and in the values nested
// in it.
func checkWith(n *Node, at, path string, v any, depth int, add func(string, string, ...any)) {
	if depth > maxValueDepth {
		return
	}
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, exprOpen) {
			return
		}
		key := strings.TrimPrefix(path, at+".")
		vars, err := CheckTemplate(x)
		if err != nil {
			add(path, "node %q: %s: %s: %s", n.Name, key, shownExpr(badExpr(x)), oneLine(err.Error(), 300))
			return
		}
		if n.ForEach == "" {
			for _, v := range vars {
				if v == "item" || v == "index" {
					add(path, "node %q: %s reads %s, which only the with of a for_each node can read: add for_each to the node or stop reading %s", n.Name, key, v, v)
					return
				}
			}
		}
		checkParents(n, key, x, path, add)
	case map[string]any:
		for _, k := range sortedKeys(x) {
			checkWith(n, at, path+"."+pathKey(k), x[k], depth+1, add)
		}
	case map[string]string:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			checkWith(n, at, path+"."+pathKey(k), x[k], depth+1, add)
		}
	case []any:
		for i, e := range x {
			checkWith(n, at, fmt.Sprintf("%s[%d]", path, i), e, depth+1, add)
		}
	case []string:
		for i, e := range x {
			checkWith(n, at, fmt.Sprintf("%s[%d]", path, i), e, depth+1, add)
		}
	}
}

// checkParents refuses an expression in s that reads nodes.X for an X that is not a parent
// of n: a node's expressions see only its parents' outputs. Only the plain forms, nodes.X
// and nodes["X"], are found.
func checkParents(n *Node, key, s, path string, add func(string, string, ...any)) {
	for _, src := range exprSources(s) {
		for _, ref := range nodeRefs(src) {
			if !slices.Contains(n.Needs, ref) {
				ref = oneLine(ref, 80)
				add(path, "node %q: %s reads nodes.%s, but %s is not in the node's needs: add it to needs (expressions see only the parents' outputs)", n.Name, key, ref, ref)
				return
			}
		}
	}
}

// exprSources returns the sources of the expressions in the template s.
func exprSources(s string) []string {
	parts, err := splitTemplate(s)
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range parts {
		if p.isExpr {
			out = append(out, p.src)
		}
	}
	return out
}

// badExpr returns the first expression of s, "${{ … }}" as written, that does not compile,
// or s.
func badExpr(s string) string {
	parts, terr := splitTemplate(s)
	if terr != nil {
		return terr.raw
	}
	for _, p := range parts {
		if !p.isExpr {
			continue
		}
		if _, err := compileExpr(p.src); err != nil {
			return p.raw
		}
	}
	return s
}

// nodeRefs returns the node names src reads as nodes.X or nodes["X"], in order.
func nodeRefs(src string) []string {
	tree, err := exprparser.Parse(src)
	if err != nil {
		return nil
	}
	var c nodeRefCollector
	exprast.Walk(&tree.Node, &c)
	return c.names
}

type nodeRefCollector struct{ names []string }

func (c *nodeRefCollector) Visit(node *exprast.Node) {
	m, ok := (*node).(*exprast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*exprast.IdentifierNode)
	if !ok || id.Value != "nodes" {
		return
	}
	if s, ok := m.Property.(*exprast.StringNode); ok && !slices.Contains(c.names, s.Value) {
		c.names = append(c.names, s.Value)
	}
}

// pathKey is a map key as a YAML path element: quoted unless it is a plain name.
func pathKey(k string) string {
	if validToken(k) || strings.Contains(k, "'") {
		return k
	}
	return "'" + k + "'"
}

// validKeyName reports whether s can be part of a KV key: letters, digits and . _ - =.
func validKeyName(s string) bool {
	if s == "" || len(s) > 200 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=' || c == '.') {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// cycle returns one cycle as a path of node names (first name repeated at the end), or nil.
func (w *Workflow) cycle() []string {
	const (
		white = iota
		grey
		black
	)
	color := make(map[string]int, len(w.Nodes))
	byName := make(map[string]*Node, len(w.Nodes))
	for _, n := range w.Nodes {
		byName[n.Name] = n
	}
	var stack []string
	var found []string
	var visit func(name string) bool
	visit = func(name string) bool {
		color[name] = grey
		stack = append(stack, name)
		for _, p := range byName[name].Needs {
			switch color[p] {
			case grey:
				i := slices.Index(stack, p)
				found = append(slices.Clone(stack[i:]), p)
				slices.Reverse(found)
				return true
			case white:
				if visit(p) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[name] = black
		return false
	}
	for _, n := range w.Nodes {
		if color[n.Name] == white && visit(n.Name) {
			return found
		}
	}
	return nil
}

// llmRoles are the message roles an llm node may send.
var llmRoles = []string{"system", "developer", "user", "assistant"}

// validateLLM checks an llm node's settings that hold no expression.
func validateLLM(n *Node, at string, add func(string, string, ...any)) {
	switch m := n.With["model"].(type) {
	case nil:
		add(at+".with", "llm node %q needs with.model: a model alias from the providers file", n.Name)
	case string:
		if strings.TrimSpace(m) == "" {
			add(at+".with.model", "llm node %q: with.model is empty", n.Name)
		}
	default:
		add(at+".with.model", "llm node %q: with.model must be a model alias (a string)", n.Name)
	}
	switch ms := n.With["messages"].(type) {
	case nil:
		add(at+".with", "llm node %q needs with.messages: a list of {role, content}", n.Name)
	case string:
		if !strings.Contains(ms, exprOpen) {
			add(at+".with.messages", "llm node %q: with.messages must be a list of {role, content}", n.Name)
		}
	case []any:
		if len(ms) == 0 {
			add(at+".with.messages", "llm node %q: with.messages is empty", n.Name)
		}
		for i, m := range ms {
			mat := fmt.Sprintf("%s.with.messages[%d]", at, i)
			mm, ok := m.(map[string]any)
			if !ok {
				add(mat, "llm node %q: message %d must be {role, content}", n.Name, i)
				continue
			}
			for _, k := range sortedKeys(mm) {
				if k != "role" && k != "content" {
					add(mat+"."+k, "llm node %q: message %d has unknown field %q (use role and content)", n.Name, i, k)
				}
			}
			role, _ := mm["role"].(string)
			if !slices.Contains(llmRoles, role) && !strings.Contains(role, exprOpen) {
				add(mat+".role", "llm node %q: message %d: role %q: use %s", n.Name, i, role, strings.Join(llmRoles, ", "))
			}
			if _, ok := mm["content"]; !ok {
				add(mat, "llm node %q: message %d has no content", n.Name, i)
			}
		}
	default:
		add(at+".with.messages", "llm node %q: with.messages must be a list of {role, content}", n.Name)
	}
	if v, ok := n.With["max_tokens"]; ok {
		if f, isNum := Number(v); !isNum || f < 1 || f > 10_000_000 || f != float64(int64(f)) {
			add(at+".with.max_tokens", "llm node %q: max_tokens %v: use a whole number from 1", n.Name, v)
		}
	}
	if v, ok := n.With["temperature"]; ok {
		if f, isNum := Number(v); !isNum || !(f >= 0 && f <= 2) {
			add(at+".with.temperature", "llm node %q: temperature %v: use 0 to 2", n.Name, v)
		}
	}
	if v, ok := n.With["provider_attempts"]; ok {
		if f, isNum := Number(v); !isNum || f < 1 || f > 10 || f != float64(int64(f)) {
			add(at+".with.provider_attempts", "llm node %q: provider_attempts %v: use 1 to 10", n.Name, v)
		}
	}
	if v, ok := n.With["max_wait"]; ok {
		s, isStr := v.(string)
		if d, err := time.ParseDuration(s); !isStr || err != nil || d < 0 {
			add(at+".with.max_wait", "llm node %q: max_wait %v: use a duration such as \"10s\"", n.Name, v)
		}
	}
	for _, k := range []string{"json", "cache"} {
		if v, ok := n.With[k]; ok {
			if _, isBool := v.(bool); !isBool {
				add(at+".with."+k, "llm node %q: %s must be true or false", n.Name, k)
			}
		}
	}
	if v, ok := n.With["providers"]; ok {
		ps, isList := v.([]any)
		if !isList || len(ps) == 0 {
			add(at+".with.providers", "llm node %q: with.providers must be a list of provider names", n.Name)
		}
		for _, p := range ps {
			if name, ok := p.(string); !ok || !ValidName(name) {
				add(at+".with.providers", "llm node %q: provider %v: use the names in the providers file", n.Name, p)
			}
		}
	}
}

// Number reads a setting decoded from YAML or JSON as a number: the decoders give ints,
// uint64s, float64s or json.Numbers.
func Number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// Warnings returns advice on a valid definition that does not refuse it: settings that work
// but are likely not what the author meant.
func (w *Workflow) Warnings() []string {
	var out []string
	for _, n := range w.Nodes {
		if n == nil || n.Type != "llm" {
			continue
		}
		if c, _ := n.With["cache"].(bool); c {
			if t, ok := Number(n.With["temperature"]); ok && t > 0 {
				out = append(out, fmt.Sprintf("node %s: cache is on with temperature %v: every run gets the first answer, not a fresh sample", n.Name, t))
			}
		}
	}
	return out
}

// validateWait checks a wait node's settings.
func validateWait(n *Node, at string, add func(string, string, ...any)) {
	switch sig := n.With["signal"].(type) {
	case nil:
		add(at+".with", "wait node %q needs with.signal: the name `jetflow runs signal` sends", n.Name)
	case string:
		if !ValidName(sig) {
			add(at+".with.signal", "wait node %q: signal %q: use letters, digits, '_' and '-' only", n.Name, sig)
		}
	default:
		add(at+".with.signal", "wait node %q: with.signal must be a name", n.Name)
	}
	if v, ok := n.With["timeout"]; ok {
		s, _ := v.(string)
		if d, err := time.ParseDuration(s); err != nil || d <= 0 || d > MaxWaitTimeout {
			add(at+".with.timeout", "wait node %q: timeout %v: use a duration from 1s to 8760h (365 days), such as \"48h\"", n.Name, v)
		}
	}
	if v, ok := n.With["on_timeout"]; ok && v != "fail" && v != "skip" {
		add(at+".with.on_timeout", "wait node %q: on_timeout %v: use fail or skip", n.Name, v)
	}
}

// WaitSettings are a wait node's settings with the defaults applied (after Validate).
func (n *Node) WaitSettings() (signal string, timeout time.Duration, skip bool) {
	signal, _ = n.With["signal"].(string)
	timeout = DefaultWaitTimeout
	if s, ok := n.With["timeout"].(string); ok {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			timeout = d
		}
	}
	skip = n.With["on_timeout"] == "skip"
	return signal, timeout, skip
}

// validStreamName reports whether s may name a JetStream stream.
func validStreamName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

// validSubjectFilter reports whether s is a subject filter: dot-separated tokens, '*' a
// whole token, '>' only the last.
func validSubjectFilter(s string) bool {
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "" || strings.ContainsAny(t, " \t\r\n"):
			return false
		case t == ">" && i != len(toks)-1:
			return false
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

func validDuration(s string) bool {
	d, err := time.ParseDuration(s)
	return err == nil && d > 0
}
