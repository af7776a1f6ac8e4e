package llm_test

import (
	"fmt"

	"github.com/jetflow-dev/jetflow/nodes/llm"
)

// A providers file: an OpenAI provider with its key from the environment, and a local
// Ollama as its fallback. Give it to a worker as llm.Config.Providers (or with
// `jetflow worker --providers FILE`).
func ExampleParseFile() {
	file, err := llm.ParseFile("providers.yaml", []byte(`providers:
  - name: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    models: {fast: gpt-4o-mini}
    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}
    rate: {requests_per_minute: 500, tokens_per_minute: 200000}
  - name: local
    base_url: http://localhost:11434/v1
    models: {fast: "llama3.1:8b"}
`), func(string) string { return "sk-example" })
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range file.Providers {
		fmt.Printf("%s: breaker and rate key %s, fast = %s\n", p.Name, p.Key(), p.Models["fast"])
	}
	fmt.Printf("1,000 prompt and 200 answer tokens on openai cost $%.6f\n", file.Provider("openai").Price.Cost(1000, 200))
	// Output:
	// openai: breaker and rate key llm:openai, fast = gpt-4o-mini
	// local: breaker and rate key llm:local, fast = llama3.1:8b
	// 1,000 prompt and 200 answer tokens on openai cost $0.000270
}
