package workflow

import (
	"errors"
	"fmt"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// The expressions of control flow (DESIGN.md "Control flow: conditions, maps, subflows"): a
// node's `if` and `for_each` are each one ${{ expr }}, over the same variables as `with`.

// Condition evaluates a node's `if` (one ${{ expr }}, which must give a boolean).
func Condition(src string, v Vars) (bool, error) {
	val, err := evalWhole("if", src, v)
	if err != nil {
		return false, err
	}
	b, ok := val.(bool)
	if !ok {
		return false, &ExprError{Key: "if", Expr: shownExpr(src), Err: fmt.Errorf("gives %s, not true or false", typeName(val))}
	}
	return b, nil
}

// Items evaluates a node's `for_each` (one ${{ expr }}, which must give a JSON array of at
// most MaxItems values) and returns the items.
func Items(src string, v Vars) ([]any, error) {
	val, err := evalWhole("for_each", src, v)
	if err != nil {
		return nil, err
	}
	list, ok := val.([]any)
	switch {
	case !ok:
		return nil, &ExprError{Key: "for_each", Expr: shownExpr(src), Err: fmt.Errorf("gives %s, not a list", typeName(val))}
	case len(list) > MaxItems:
		return nil, &ExprError{Key: "for_each", Expr: shownExpr(src), Err: fmt.Errorf("gives %d items; at most %d are allowed", len(list), MaxItems)}
	}
	return list, nil
}

// evalWhole evaluates src, which must be exactly one ${{ expr }}, and returns its value.
func evalWhole(key, src string, v Vars) (any, error) {
	p, err := wholeExpr(src)
	if err != nil {
		return nil, &ExprError{Key: key, Expr: shownExpr(src), Err: err}
	}
	x := &expander{vars: v, meter: new(meter)}
	val, err := x.eval(p)
	if err != nil {
		return nil, &ExprError{Key: key, Expr: shownExpr(p.raw), Err: err}
	}
	return val, nil
}

// wholeExpr returns the one expression src is, "${{ expr }}" with nothing around it.
func wholeExpr(src string) (part, error) {
	s := strings.TrimSpace(src)
	parts, terr := splitTemplate(s)
	if terr != nil {
		return part{}, terr.err
	}
	if len(parts) != 1 || !parts[0].isExpr {
		return part{}, errors.New(`write one expression: "${{ … }}" with nothing around it`)
	}
	return parts[0], nil
}

// CheckExpr compiles the one ${{ expr }} src is, as validation does for `if` and `for_each`,
// and returns a one-line error for a syntax error. It also returns the top-level variables
// the expression reads (input, nodes, run_id, env, item, index).
func CheckExpr(src string) (vars []string, err error) {
	p, err := wholeExpr(src)
	if err != nil {
		return nil, err
	}
	if _, err := compileExpr(p.src); err != nil {
		return nil, err
	}
	return exprVars(p.src), nil
}

// CheckTemplate compiles every ${{ expr }} in a `with` string, as validation does, and
// returns the first syntax error, and the top-level variables the expressions read.
func CheckTemplate(s string) (vars []string, err error) {
	parts, terr := splitTemplate(s)
	if terr != nil {
		return nil, terr.err
	}
	for _, p := range parts {
		if !p.isExpr {
			continue
		}
		if _, err := compileExpr(p.src); err != nil {
			return nil, err
		}
		vars = append(vars, exprVars(p.src)...)
	}
	return vars, nil
}

// exprVarNames are the variables expressions may read.
var exprVarNames = map[string]bool{"input": true, "nodes": true, "run_id": true, "env": true, "item": true, "index": true}

// exprVars returns the variables of exprVarNames that src reads, in order of first use.
func exprVars(src string) []string {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	c := &identCollector{seen: map[string]bool{}}
	ast.Walk(&tree.Node, c)
	return c.vars
}

type identCollector struct {
	seen map[string]bool
	vars []string
}

func (c *identCollector) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok && exprVarNames[id.Value] && !c.seen[id.Value] {
		c.seen[id.Value] = true
		c.vars = append(c.vars, id.Value)
	}
}
