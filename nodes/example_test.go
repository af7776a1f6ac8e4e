package nodes_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
)

func ExampleExec() {
	out, err := nodes.Exec(context.Background(), &consumer.Step{
		RunID: "r1", Workflow: "demo", Node: "hello", Attempt: 1,
		With: map[string]any{"command": `echo '{"ok":true}'`},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(string(out.(json.RawMessage)))
	// Output: {"ok":true}
}

func ExampleNoop() {
	out, _ := nodes.Noop(context.Background(), &consumer.Step{
		With: map[string]any{"output": map[string]any{"answer": 42}},
	})
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	// Output: {"answer":42}
}

func ExampleSleep() {
	// A first run parks the step; the worker brings it back when the wait is over.
	_, err := nodes.Sleep(context.Background(), &consumer.Step{
		With: map[string]any{"duration": "1h"},
	})
	var park *consumer.ParkError
	fmt.Println("parked:", errors.As(err, &park))
	// Output: parked: true
}
