package metrics_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/metrics"
)

// The overview shows today's model spend by workflow and provider, and the run page the
// run's cost, what was wasted and what was saved.
func TestDashboardShowsCost(t *testing.T) {
	f := setup(t)
	f.worker()
	id := f.start("ok")
	f.waitEnd(id, checkpoint.EndCompleted)
	ctx := context.Background()
	// The spend an llm node's calls record (nodes/llm writes it so).
	for _, c := range []checkpoint.Call{
		{ID: "a", Node: "a", Provider: "openai", USD: 0.25, InputTokens: 1000, OutputTokens: 200},
		{ID: "b", Node: "b", Provider: "local-vllm", USD: 0.5, InputTokens: 10, OutputTokens: 20},
	} {
		if err := f.store.SettleSpend(ctx, id, "ok", c); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.store.AddSaved(ctx, id, 0.125); err != nil {
		t.Fatal(err)
	}
	_, base := f.server(metrics.ServerConfig{})
	code, body := get(t, base+"/")
	if code != 200 {
		t.Fatalf("GET /: %d", code)
	}
	for _, want := range []string{"Model spend today", "$0.7500", "$0.1250 saved by resuming", "<td>ok</td><td class=\"num\">$0.7500</td>",
		"<td>local-vllm</td><td class=\"num\">$0.5000</td>", "<td>openai</td><td class=\"num\">$0.2500</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the overview does not show %q", want)
		}
	}
	code, body = get(t, base+"/runs/"+id)
	if code != 200 || !strings.Contains(body, "cost <b>$0.7500</b>") || !strings.Contains(body, "$0.1250 saved by resuming") {
		t.Errorf("the run page (%d) does not show the run's cost and saving", code)
	}
	code, body = get(t, base+"/api/runs/"+id)
	var v struct {
		CostUSD  float64 `json:"cost_usd"`
		SavedUSD float64 `json:"saved_usd"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || v.CostUSD != 0.75 || v.SavedUSD != 0.125 {
		t.Errorf("/api/runs/%s (%d): want cost_usd 0.75 and saved_usd 0.125: %s", id, code, body)
	}
}
