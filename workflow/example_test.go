package workflow_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

func ExampleNew() {
	w := workflow.New("orders")
	w.Node("charge", "http").
		WithArgs(map[string]any{"method": "POST", "url": "https://pay.example/${{ input.order_id }}"}).
		WithRetry(workflow.Retry{MaxAttempts: 3}).
		WithTimeout(30 * time.Second)
	w.Node("ship", "exec", "charge").WithArgs(map[string]any{"command": []any{"ship-it"}})
	w.Node("email", "noop", "charge")
	w.Node("done", "noop", "ship", "email")

	if err := w.Validate(workflow.ValidateOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("roots:", w.Roots()[0].Name)
	fmt.Println("children of charge:", w.Children("charge"))
	fmt.Println("sinks:", w.Sinks())
	fmt.Println("charge attempts:", w.Lookup("charge").RetryPolicy().MaxAttempts)
	// Output:
	// roots: charge
	// children of charge: [ship email]
	// sinks: [done]
	// charge attempts: 3
}

func ExampleWorkflow_Node() {
	w := workflow.New("wf")
	n := w.Node("wait", "sleep").WithArgs(map[string]any{"duration": "1h"})
	fmt.Println(n.Name, n.Type, n.With["duration"], n.TimeoutOrDefault())
	// Output: wait sleep 1h 10m0s
}

func ExampleWorkflow_Validate() {
	w := workflow.New("wf")
	w.Node("a", "noop", "c")
	w.Node("b", "noop", "a")
	w.Node("c", "noop", "b")
	fmt.Println(w.Validate(workflow.ValidateOptions{}))
	// Output: $.nodes[0].needs: cycle: a → b → c → a
}

func ExampleParse() {
	src := []byte(`
name: nightly
nodes:
  - name: export
    type: exec
    with:
      command: [export, --since, "${{ input.since }}"]
    retry: {max_attempts: 3, initial: 10s}
  - name: report
    type: noop
    needs: [export]
`)
	w, err := workflow.Parse("nightly.yaml", src, workflow.ValidateOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(w.Name, len(w.Nodes), w.Children("export"))
	fmt.Println(w.Lookup("export").RetryPolicy().Initial)

	// Errors are one line and say where.
	_, err = workflow.Parse("bad.yaml", []byte("name: bad\nnodes:\n  - name: a\n    type: sleep\n    with: {duration: soon}\n"), workflow.ValidateOptions{})
	fmt.Println(err)
	// Output:
	// nightly 2 [report]
	// 10s
	// bad.yaml:5:22: sleep node "a": duration "soon" must be positive, such as "30s"
}

func ExampleWorkflow_Hash() {
	fromYAML, err := workflow.Parse("a.yaml", []byte("name: wf\nnodes:\n  - {name: a, type: noop}\n"), workflow.ValidateOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fromJSON, err := workflow.Parse("a.json", []byte(`{"nodes": [{"type": "noop", "name": "a"}], "name": "wf"}`), workflow.ValidateOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	inGo := workflow.New("wf")
	inGo.Node("a", "noop")

	h1, _ := fromYAML.Hash()
	h2, _ := fromJSON.Hash()
	h3, _ := inGo.Hash()
	canon, _ := inGo.Canonical()
	fmt.Println(string(canon))
	fmt.Println(h1)
	fmt.Println(h1 == h2, h2 == h3)
	// Output:
	// {"name":"wf","nodes":[{"name":"a","type":"noop"}]}
	// 093fbe295d3e1411a24b37f4c6815d0b6d4d2f7b6c790028a861a5b50ee24c8d
	// true true
}

func ExampleExpand() {
	with := map[string]any{
		"url":     "https://api.example/orders/${{ input.order_id }}",
		"body":    "${{ nodes.quote.price * input.qty }}",
		"headers": map[string]any{"X-Run": "${{ run_id }}", "X-Region": "${{ env.REGION }}"},
		"items":   "${{ map(nodes.quote.items, .sku) }}",
		"note":    "quote: ${{ nodes.quote }}",
	}
	vars := workflow.Vars{
		Input: json.RawMessage(`{"order_id": "A-17", "qty": 3}`),
		Nodes: map[string]json.RawMessage{"quote": json.RawMessage(`{"price": 2.5, "items": [{"sku": "x"}, {"sku": "y"}]}`)},
		RunID: "run-1",
		Env:   map[string]string{"REGION": "eu"},
	}
	if !workflow.HasExpr(with) {
		return
	}
	out, err := workflow.Expand(with, vars)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
	// Output:
	// {
	//   "body": 7.5,
	//   "headers": {
	//     "X-Region": "eu",
	//     "X-Run": "run-1"
	//   },
	//   "items": [
	//     "x",
	//     "y"
	//   ],
	//   "note": "quote: {\"items\":[{\"sku\":\"x\"},{\"sku\":\"y\"}],\"price\":2.5}",
	//   "url": "https://api.example/orders/A-17"
	// }
}

func ExampleExpand_missing() {
	vars := workflow.Vars{Nodes: map[string]json.RawMessage{"fetch": json.RawMessage(`{"status": 200}`)}}

	_, err := workflow.Expand(map[string]any{"url": "${{ nodes.fetch.url }}"}, vars)
	fmt.Println(err)

	out, err := workflow.Expand(map[string]any{"url": "${{ nodes.fetch?.url ?? 'https://default.example' }}"}, vars)
	fmt.Println(out["url"], err)
	// Output:
	// with.url: ${{ nodes.fetch.url }}: nodes.fetch has no field "url" (it has "status")
	// https://default.example <nil>
}

func ExampleHasExpr() {
	fmt.Println(workflow.HasExpr(map[string]any{"command": []any{"echo", "hi"}}))
	fmt.Println(workflow.HasExpr(map[string]any{"command": []any{"echo", "${{ input.name }}"}}))
	// Output:
	// false
	// true
}

func ExampleDecodeEnvelope() {
	e := &workflow.Envelope{RunID: "run-1", Workflow: "orders", Def: fmt.Sprintf("%064x", 1), Node: "charge",
		Input: json.RawMessage(`{"input":{}}`), Dispatch: workflow.DispatchSchedule(2)}
	body, _ := e.Encode()
	got, err := workflow.DecodeEnvelope(body)
	fmt.Println(got.MsgID(), err)

	_, err = workflow.DecodeEnvelope([]byte(`{"v":2}`))
	fmt.Println(err)
	// Output:
	// run-1.charge.s2 <nil>
	// malformed: envelope version 2, want 1
}

func ExampleNewNames() {
	n, err := workflow.NewNames("my-app")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(n.StepsStream())
	fmt.Println(n.StepSubject("http", "orders", "charge"))
	fmt.Println(n.Consumer("http"))
	// Output:
	// MY-APP_STEPS
	// my-app.step.http.orders.charge
	// my-app-http
}
