package metrics

import (
	"testing"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// The run page's graph draws a skipped node as skipped, a map node with its done/total, and
// a subflow node linking to its child run.
func TestGraphShowsControlFlow(t *testing.T) {
	def := workflow.New("g")
	def.Node("a", "noop")
	def.Node("b", "noop", "a").If = "${{ false }}"
	def.Node("m", "noop", "a").ForEach = "${{ nodes.a }}"
	def.Node("s", workflow.SubflowType, "m").With = map[string]any{"workflow": "child"}
	rv := &checkpoint.RunView{Nodes: map[string]*checkpoint.NodeView{
		"a": {Status: checkpoint.StatusDone},
		"b": {Status: checkpoint.StatusSkipped},
		"m": {Status: checkpoint.StatusRunning, Items: &checkpoint.ItemCounts{Count: 5, Done: 2}},
		"s": {Status: checkpoint.StatusWaiting, Child: "kid-1"},
	}}
	g := layoutGraph(def, rv)
	got := map[string]graphNode{}
	for _, n := range g.Nodes {
		got[n.Name] = n
	}
	if got["b"].Status != checkpoint.StatusSkipped || got["m"].Items != "2/5" || got["s"].Child != "kid-1" || got["s"].Status != checkpoint.StatusWaiting {
		t.Fatalf("graph nodes %+v", got)
	}
}
