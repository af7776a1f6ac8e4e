package workflow

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// MaxDefinitionBytes is the largest definition file Parse accepts.
const MaxDefinitionBytes = 8 << 20

// Parse reads a YAML or JSON definition and validates it. nodes is a list of nodes, or a
// mapping from node name to node that means the same list in key order. file names the source
// in errors (file:line:col); errors are *ValidationError.
func Parse(file string, data []byte, opts ValidateOptions) (_ *Workflow, err error) {
	defer func() { // go-yaml panics on some malformed input (e.g. "nodes: !x")
		if r := recover(); r != nil {
			err = &ValidationError{File: file, Problems: []Problem{{Msg: oneLine(fmt.Sprintf("the YAML parser failed on this file (%v); check its syntax", r), 300)}}}
		}
	}()
	fail := func(line, col int, path, msg string) error {
		return &ValidationError{File: file, Problems: []Problem{{Path: path, Line: line, Col: col, Msg: msg}}}
	}
	if len(data) > MaxDefinitionBytes {
		return nil, fail(0, 0, "", fmt.Sprintf("definition is %d bytes; at most %d are allowed", len(data), MaxDefinitionBytes))
	}
	if strings.TrimSpace(string(data)) == "" {
		return nil, fail(0, 0, "", "the file is empty")
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlProblem(file, err)
	}
	located := func(ps []Problem) error {
		for i := range ps {
			if ps[i].Line == 0 {
				ps[i].Line, ps[i].Col = position(f, ps[i].Path)
			}
		}
		return &ValidationError{File: file, Problems: ps}
	}
	body := firstBody(f)
	keys, isMap, ps := nodesAsList(body)
	if len(ps) > 0 {
		return nil, located(ps)
	}
	var w Workflow
	decodeOpts := []yaml.DecodeOption{yaml.DisallowUnknownField(), yaml.UseJSONUnmarshaler()}
	if isMap { // decode the rewritten tree, whose tokens still carry the file's positions
		err = yaml.NodeToValue(body, &w, decodeOpts...)
	} else {
		err = yaml.UnmarshalWithOptions(data, &w, decodeOpts...)
	}
	if err != nil {
		return nil, yamlProblem(file, err)
	}
	if ps := renamed(&w, keys); len(ps) > 0 {
		return nil, located(ps)
	}
	ps = explicitZeros(body)
	if err := w.Validate(opts); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return nil, err
		}
		ps = append(ps, ve.Problems...)
	}
	if len(ps) > 0 {
		return nil, located(ps)
	}
	return &w, nil
}

// firstBody returns the body of the first non-empty document of f, the one the decoder reads.
func firstBody(f *ast.File) ast.Node {
	for _, d := range f.Docs {
		if d.Body != nil {
			return d.Body
		}
	}
	return nil
}

// nodesAsList rewrites `nodes` written as a mapping keyed by node name into the list form, in
// place, so that the tree decodes as the list would and paths such as $.nodes[2].retry still
// find their tokens in the file. Each entry becomes its value's mapping with `name: <key>` put
// first (unless the value names itself); a null value is a node with only its name. An entry's
// anchor ("a: &defaults {...}") stays usable: an alias to it, as an entry or as a merge
// ("<<: *defaults"), stands for the settings as written, without the name. It returns the
// keys in order, and isMap false when nodes is not a mapping. A nodes that is neither a list
// nor a mapping, and entries that cannot be nodes, are problems.
func nodesAsList(body ast.Node) (keys []string, isMap bool, ps []Problem) {
	top, ok := body.(*ast.MappingNode)
	if !ok {
		return nil, false, nil
	}
	var field *ast.MappingValueNode
	for _, mv := range top.Values {
		if k, ok := mv.Key.(*ast.StringNode); ok && k.Value == "nodes" {
			field = mv
			break
		}
	}
	if field == nil {
		return nil, false, nil
	}
	m, ok := field.Value.(*ast.MappingNode)
	if !ok {
		switch field.Value.(type) {
		case *ast.SequenceNode, *ast.NullNode, *ast.AliasNode, *ast.AnchorNode, *ast.TagNode:
			return nil, false, nil // the decoder reads these as it always has
		}
		return nil, false, []Problem{problemAt(field.Value.GetToken(), "$.nodes",
			fmt.Sprintf("nodes must be a list of nodes or a mapping from node name to node (got a YAML %s)", field.Value.Type().YAMLName()))}
	}
	seq := ast.Sequence(m.GetToken(), m.IsFlowStyle)
	anchors := map[string]ast.Node{} // the entries' anchors, which the rewrite drops
	keys = make([]string, 0, len(m.Values))
	for i, mv := range m.Values {
		at := fmt.Sprintf("$.nodes[%d]", i)
		ktk := mv.Key.GetToken()
		name, msg := entryName(mv.Key)
		if msg != "" {
			ps = append(ps, problemAt(ktk, at, msg))
			continue
		}
		v, anchor := mv.Value, ""
		if a, ok := v.(*ast.AnchorNode); ok {
			v, anchor = a.Value, a.Name.GetToken().Value
		}
		vals, msg := entryValues(name, v, anchors)
		if msg != "" {
			ps = append(ps, problemAt(mv.Value.GetToken(), at, msg))
			continue
		}
		for _, s := range vals {
			s.Value = inlineAliases(s.Value, anchors)
		}
		if anchor != "" { // after the inlining, so that the tree stays acyclic
			anchors[anchor] = v
		}
		if !slices.ContainsFunc(vals, isNameField) {
			vals = append([]*ast.MappingValueNode{ast.MappingValue(ktk, stringNode("name", ktk), stringNode(name, ktk))}, vals...)
		}
		keys = append(keys, name)
		seq.Values = append(seq.Values, ast.Mapping(ktk, false, vals...))
	}
	if len(ps) > 0 {
		return nil, true, ps
	}
	field.Value = seq
	return keys, true, nil
}

// entryName returns the node name a key of the nodes mapping gives, or why it gives none.
func entryName(k ast.MapKeyNode) (name, problem string) {
	switch k := k.(type) {
	case *ast.StringNode:
		return k.Value, ""
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
		return k.GetToken().Value, "" // as written: key 007 names node "007"
	case *ast.MergeKeyNode:
		return "", "a merge key (<<) cannot stand directly under nodes: write each node under its own name"
	}
	return "", fmt.Sprintf("a node name under nodes must be a plain string (got a YAML %s)", k.Type().YAMLName())
}

// entryValues returns the settings of node name, written as v in the nodes mapping, or why v
// cannot be a node. anchors holds the earlier entries' anchors.
func entryValues(name string, v ast.Node, anchors map[string]ast.Node) (_ []*ast.MappingValueNode, problem string) {
	switch v := v.(type) {
	case *ast.NullNode:
		return nil, ""
	case *ast.MappingNode:
		return v.Values, ""
	case *ast.TagNode:
		if token.ReservedTagKeyword(v.Start.Value) == token.MappingTag {
			return entryValues(name, v.Value, anchors)
		}
	case *ast.AliasNode:
		a := v.Value.GetToken().Value
		if t, ok := anchors[a]; ok {
			return entryValues(name, t, anchors)
		}
		return nil, fmt.Sprintf("node %q: *%s is not the anchor of an earlier node under nodes", name, a)
	}
	return nil, fmt.Sprintf("node %q must be a mapping of its settings, such as \"%s: {type: noop}\" (got a YAML %s)", name, name, v.Type().YAMLName())
}

// inlineAliases returns n with the aliases to anchors replaced by the nodes they name, walking
// in document order: an anchor defined again inside n is the decoder's from there on.
func inlineAliases(n ast.Node, anchors map[string]ast.Node) ast.Node {
	switch n := n.(type) {
	case *ast.AliasNode:
		if t, ok := anchors[n.Value.GetToken().Value]; ok {
			return t
		}
	case *ast.AnchorNode:
		delete(anchors, n.Name.GetToken().Value)
		n.Value = inlineAliases(n.Value, anchors)
	case *ast.TagNode:
		n.Value = inlineAliases(n.Value, anchors)
	case *ast.MappingNode:
		for _, mv := range n.Values {
			mv.Value = inlineAliases(mv.Value, anchors)
		}
	case *ast.MappingValueNode:
		n.Value = inlineAliases(n.Value, anchors)
	case *ast.SequenceNode:
		for i, v := range n.Values {
			n.Values[i] = inlineAliases(v, anchors)
		}
	}
	return n
}

func isNameField(mv *ast.MappingValueNode) bool {
	k, ok := mv.Key.(*ast.StringNode)
	return ok && k.Value == "name"
}

// stringNode is a string scalar placed at tk's position.
func stringNode(s string, tk *token.Token) *ast.StringNode {
	n := token.New(s, s, tk.Position)
	n.Type = token.StringType
	return ast.String(n)
}

// problemAt is a problem placed at tk.
func problemAt(tk *token.Token, path, msg string) Problem {
	p := Problem{Path: path, Msg: msg}
	if tk != nil && tk.Position != nil {
		p.Line, p.Col = tk.Position.Line, tk.Position.Column
	}
	return p
}

// renamed reports entries of a nodes mapping whose value names the node differently from its
// key.
func renamed(w *Workflow, keys []string) []Problem {
	var ps []Problem
	for i, k := range keys {
		if i < len(w.Nodes) && w.Nodes[i] != nil && w.Nodes[i].Name != k {
			ps = append(ps, Problem{Path: fmt.Sprintf("$.nodes[%d].name", i),
				Msg: fmt.Sprintf("node %q is named %q inside; under a nodes mapping the key is the name, so drop name or make it %q", k, w.Nodes[i].Name, k)})
		}
	}
	return ps
}

// yamlProblem turns a go-yaml error into a one-problem ValidationError with its position.
func yamlProblem(file string, err error) error {
	var ye yaml.Error
	p := Problem{Msg: oneLine(err.Error(), 300)}
	if errors.As(err, &ye) {
		p.Msg = oneLine(ye.GetMessage(), 300)
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			p.Line, p.Col = tk.Position.Line, tk.Position.Column
		}
	}
	if strings.Contains(p.Msg, "unknown field") {
		p.Msg += " (check the spelling; see the README for the fields a node takes)"
	}
	return &ValidationError{File: file, Problems: []Problem{p}}
}

// explicitZeros finds retry settings written as zero or negative, which the typed decode
// cannot tell from absent ones. body is the document, with nodes in the list form.
func explicitZeros(body ast.Node) []Problem {
	var raw struct {
		Nodes []struct {
			Retry map[string]any `json:"retry"`
		} `json:"nodes"`
	}
	if body == nil || yaml.NodeToValue(body, &raw) != nil {
		return nil
	}
	var ps []Problem
	for i, n := range raw.Nodes {
		for _, k := range []string{"max_attempts", "initial", "max", "multiplier"} {
			v, ok := n.Retry[k]
			if !ok || !zeroOrNegative(v) {
				continue
			}
			ps = append(ps, Problem{Path: fmt.Sprintf("$.nodes[%d].retry.%s", i, k), Msg: fmt.Sprintf("retry.%s must be positive (got %v)", k, v)})
		}
	}
	return ps
}

func zeroOrNegative(v any) bool {
	switch x := v.(type) {
	case int64:
		return x <= 0
	case uint64:
		return x == 0
	case int:
		return x <= 0
	case float64:
		return x <= 0
	case string:
		s := strings.TrimSpace(x)
		return s == "0" || strings.HasPrefix(s, "-") || strings.TrimLeft(s, "0.") == "" ||
			strings.TrimRight(strings.TrimLeft(s, "0."), "nsuµmh") == ""
	}
	return false
}

// position finds the line and column of path in f, walking up to the nearest existing parent.
func position(f *ast.File, path string) (int, int) {
	for path != "" && path != "$" {
		if p, err := yaml.PathString(path); err == nil {
			if n, err := p.FilterFile(f); err == nil && n != nil {
				if tk := n.GetToken(); tk != nil && tk.Position != nil {
					return tk.Position.Line, tk.Position.Column
				}
			}
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			break
		}
		path = path[:i]
	}
	return 0, 0
}
