package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetflow-dev/jetflow/internal/llmstub"
)

const cliTestKey = "sk-cli-test-7d3e9a1b5c"

// TestLLMSession is the README's llm session: a worker with a providers file whose first
// provider is down runs an llm node on the second; `runs get` shows who answered, the
// fallback, the tokens and the cost; the API key shows nowhere.
func TestLLMSession(t *testing.T) {
	t.Setenv("JETFLOW_TEST_LLM_KEY", cliTestKey)
	down := llmstub.Start(func(*llmstub.Request) llmstub.Reply {
		return llmstub.Reply{Status: 401, Message: "Incorrect API key provided: " + cliTestKey}
	})
	defer down.Close()
	up := llmstub.Start(func(*llmstub.Request) llmstub.Reply {
		return llmstub.Reply{Content: "Bonjour", PromptTokens: 12, CompletionTokens: 3}
	})
	defer up.Close()
	dir := t.TempDir()
	providers := filepath.Join(dir, "providers.yaml")
	writeFile(t, providers, `providers:
  - name: primary
    base_url: `+down.BaseURL()+`
    api_key_env: JETFLOW_TEST_LLM_KEY
    models: {small: big-model}
    price: {input_per_mtok: 5, output_per_mtok: 15}
  - name: backup
    base_url: `+up.BaseURL()+`
    models: {small: backup-model}
    price: {input_per_mtok: 1, output_per_mtok: 2}
`)
	def := filepath.Join(dir, "greet.yaml")
	writeFile(t, def, `name: greet
budget: {usd: 1}
nodes:
  - name: hello
    type: llm
    with:
      model: small
      max_tokens: 20
      cache: true
      temperature: 0.7
      messages:
        - {role: user, content: "Say hello in French to ${{ input.name }}."}
`)
	e := newEnv(t)
	r := e.cli("workflows", "validate", def)
	if r.code != 0 || !strings.Contains(r.stderr, "warning: workflow greet: node hello: cache is on with temperature 0.7") {
		t.Fatalf("validate should pass with a warning about cache and temperature: %s", r)
	}
	if r := e.cli("workflows", "apply", def); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	logs := e.worker("--providers", providers)
	r = e.cli("start", "greet", "--input", `{"name": "Ada"}`, "--wait", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("start --wait: %s\nworker:\n%s", r, logs)
	}
	id := strings.TrimSpace(lines(r.stdout)[0])
	if f := strings.Fields(id); len(f) > 0 {
		id = f[len(f)-1]
	}
	r = e.cli("runs", "get", id, "--json")
	if r.code != 0 {
		t.Fatalf("runs get: %s", r)
	}
	var v struct {
		CostUSD float64 `json:"cost_usd"`
		Nodes   map[string]struct {
			Status   string   `json:"status"`
			Fallback bool     `json:"fallback"`
			CostUSD  *float64 `json:"cost_usd"`
			Usage    *struct {
				In  int64 `json:"input_tokens"`
				Out int64 `json:"output_tokens"`
			} `json:"usage"`
			Output struct {
				Content   string `json:"content"`
				Provider  string `json:"provider"`
				Model     string `json:"model"`
				Fallbacks []struct {
					Provider, Reason string
				} `json:"fallbacks"`
			} `json:"output"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("runs get --json: %v\n%s", err, r.stdout)
	}
	n := v.Nodes["hello"]
	want := (12*1 + 3*2) / 1e6
	if n.Status != "done" || n.Output.Provider != "backup" || n.Output.Model != "backup-model" || !n.Fallback ||
		n.Usage == nil || n.Usage.In != 12 || n.Usage.Out != 3 || n.CostUSD == nil || *n.CostUSD != want || v.CostUSD != want {
		t.Errorf("runs get --json: want hello done by backup as a fallback, 12+3 tokens, $%v:\n%s", want, r.stdout)
	}
	if len(n.Output.Fallbacks) != 1 || !strings.Contains(n.Output.Fallbacks[0].Reason, "HTTP 401") {
		t.Errorf("fallbacks %+v: want primary passed over for its 401", n.Output.Fallbacks)
	}
	human := e.cli("runs", "get", id)
	if !strings.Contains(human.stdout, "cost      $0.000018") || !strings.Contains(human.stdout, "backup (fallback), $0.000018, 12+3 tokens") {
		t.Errorf("runs get should show the cost and who answered:\n%s", human.stdout)
	}
	for what, text := range map[string]string{"runs get --json": r.stdout, "runs get": human.stdout, "worker logs": logs.String()} {
		if strings.Contains(text, cliTestKey) {
			t.Errorf("%s holds the API key:\n%s", what, text)
		}
	}
	if calls := down.Calls(); len(calls) != 1 || calls[0].Authorization != "Bearer "+cliTestKey {
		t.Errorf("the primary got %d calls (%+v), want 1 with the key", len(calls), calls)
	}
	if calls := up.Calls(); len(calls) != 1 || calls[0].Authorization != "" {
		t.Errorf("the backup got %+v, want 1 call with no key (it names no api_key_env)", calls)
	}
}

// TestLLMBadProviders: a providers file that cannot be used stops the worker at once with
// one line that says what to fix.
func TestLLMBadProviders(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"missing", "", "--providers: providers file: open"},
		{"not yaml", "providers: [", "--providers:"},
		{"unknown field", "providers:\n  - name: a\n    base_url: http://127.0.0.1:1/v1\n    models: {m: m}\n    api_key: sk-inline\n", "unknown field"},
		{"no models", "providers:\n  - name: a\n    base_url: http://127.0.0.1:1/v1\n", "provider a: no models"},
		{"bad url", "providers:\n  - name: a\n    base_url: localhost:11434\n    models: {m: m}\n", "base_url \"localhost:11434\" must be an http or https URL"},
		{"unset key", "providers:\n  - name: a\n    base_url: http://127.0.0.1:1/v1\n    models: {m: m}\n    api_key_env: JETFLOW_TEST_UNSET_KEY\n", "environment variable JETFLOW_TEST_UNSET_KEY (api_key_env) is not set"},
		{"kind", "providers:\n  - name: a\n    kind: anthropic\n    base_url: http://127.0.0.1:1/v1\n    models: {m: m}\n", "kind \"anthropic\" is not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if tc.body != "" {
				writeFile(t, path, tc.body)
			}
			r := runCLI(t, t.Context(), "", "worker", "--providers", path, "--nats", "nats://127.0.0.1:1")
			if r.code != exitUsage || !strings.Contains(r.msg(), tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("want exit 2 and one line holding %q: %s", tc.want, r)
			}
			if strings.Contains(r.stderr, "sk-inline") {
				t.Errorf("the error shows the inline key: %s", r.stderr)
			}
		})
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
