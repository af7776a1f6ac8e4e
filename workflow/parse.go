package workflow

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// MaxDefinitionBytes is the largest definition file Parse accepts.
const MaxDefinitionBytes = 8 << 20

// Parse reads a YAML or JSON definition and validates it. file names the source in errors
// (file:line:col); errors are *ValidationError.
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
	var w Workflow
	if err := yaml.UnmarshalWithOptions(data, &w, yaml.DisallowUnknownField(), yaml.UseJSONUnmarshaler()); err != nil {
		return nil, yamlProblem(file, err)
	}
	var ps []Problem
	ps = append(ps, explicitZeros(data)...)
	if err := w.Validate(opts); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return nil, err
		}
		ps = append(ps, ve.Problems...)
	}
	if len(ps) > 0 {
		for i := range ps {
			ps[i].Line, ps[i].Col = position(f, ps[i].Path)
		}
		return nil, &ValidationError{File: file, Problems: ps}
	}
	return &w, nil
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
// cannot tell from absent ones.
func explicitZeros(data []byte) []Problem {
	var raw struct {
		Nodes []struct {
			Retry map[string]any `json:"retry"`
		} `json:"nodes"`
	}
	if yaml.Unmarshal(data, &raw) != nil {
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
