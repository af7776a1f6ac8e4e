package llm_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/llmstub"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes/llm"
)

// one is a workflow with a single llm node; extra goes under its with.
func one(extra string) string {
	return `name: ask
nodes:
  - name: ask
    type: llm
    retry: {max_attempts: 2, initial: 100ms}
    with:
      model: fast
      max_tokens: 50
      messages:
        - {role: system, content: "Answer briefly."}
        - {role: user, content: "${{ input.q }}"}
` + extra
}

func stub(t *testing.T, script func(*llmstub.Request) llmstub.Reply) *llmstub.Server {
	s := llmstub.Start(script)
	t.Cleanup(s.Close)
	return s
}

func TestCallSucceeds(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply {
		return llmstub.Reply{Content: `{"answer": 42}`, PromptTokens: 100, CompletionTokens: 20}
	})
	e := newEnv(t, one("      json: true\n      temperature: 0\n"), providersYAML(t, provider("a", a, "stub-large", "")), envOpts{})
	id := e.completes(t, "ask", map[string]string{"q": "what is six times seven?"})
	out := e.output(t, id, "ask")
	if out.Provider != "a" || out.Model != "stub-large" || out.Cached || len(out.Fallbacks) != 0 {
		t.Errorf("output %+v: want provider a, model stub-large, not cached, no fallbacks", out)
	}
	if out.Usage != (llm.Usage{InputTokens: 100, OutputTokens: 20}) {
		t.Errorf("usage %+v, want 100 in, 20 out", out.Usage)
	}
	// 100 × $1000/Mtok + 20 × $2000/Mtok = $0.14.
	if math.Abs(out.CostUSD-0.14) > 1e-9 {
		t.Errorf("cost_usd %v, want 0.14", out.CostUSD)
	}
	var v struct{ Answer int }
	if json.Unmarshal(out.Parsed, &v) != nil || v.Answer != 42 {
		t.Errorf("parsed %s, want the JSON answer", out.Parsed)
	}
	calls := a.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.Authorization != "Bearer "+testKey || c.Model != "stub-large" || c.MaxTokens != 50 ||
		c.ResponseFormat == nil || c.ResponseFormat.Type != "json_object" || c.Temperature == nil || *c.Temperature != 0 {
		t.Errorf("request %+v: want the key, model stub-large, max_tokens 50, json_object, temperature 0", c)
	}
	if len(c.Messages) != 2 || c.Messages[1].Content != "what is six times seven?" || c.Messages[0].Role != "system" {
		t.Errorf("messages %+v: want the system prompt and the expanded question", c.Messages)
	}
	sp, err := e.store.Spend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(sp.USD-0.14) > 1e-9 || sp.Nodes["ask"] == nil || sp.Nodes["ask"].Calls != 1 || math.Abs(sp.Providers["a"]-0.14) > 1e-9 || len(sp.Reserved) != 0 {
		t.Errorf("spend %+v: want $0.14 on node ask and provider a, nothing reserved", sp)
	}
	if got := e.obs.get("a/ok"); got != 1 {
		t.Errorf("a/ok calls %d, want 1", got)
	}
}

// TestRateLimitedWithShortRetryAfter: a 429 whose Retry-After is within max_wait is waited
// out on the same provider.
func TestRateLimitedWithShortRetryAfter(t *testing.T) {
	t.Parallel()
	a := stub(t, func(r *llmstub.Request) llmstub.Reply {
		if r.N == 1 {
			return llmstub.Reply{Status: http.StatusTooManyRequests, RetryAfter: "1", Message: "slow down"}
		}
		return llmstub.Reply{}
	})
	b := stub(t, nil)
	e := newEnv(t, one(""), providersYAML(t, provider("a", a, "m-a", ""), provider("b", b, "m-b", "")), envOpts{})
	id := e.completes(t, "ask", map[string]string{"q": "hi"})
	if out := e.output(t, id, "ask"); out.Provider != "a" {
		t.Errorf("provider %s, want a (the 429 said one second)", out.Provider)
	}
	if a.Count() != 2 || b.Count() != 0 {
		t.Errorf("calls a=%d b=%d, want 2 and 0", a.Count(), b.Count())
	}
}

// TestFallbacks: each reason DESIGN.md gives for the next provider sends the call to it,
// the output names the provider that answered and why the first was passed over, and the
// fallback is counted.
func TestFallbacks(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		reply     llmstub.Reply
		callsToA  int64
		reasonHas string
	}{
		{"429 longer than max_wait", llmstub.Reply{Status: 429, RetryAfter: "60"}, 1, "HTTP 429"},
		{"500 twice", llmstub.Reply{Status: 500, Message: "boom"}, 2, "HTTP 500"},
		{"timeout", llmstub.Reply{Delay: 5 * time.Second}, 2, "no answer within 2s"},
		{"malformed JSON", llmstub.Reply{Raw: `{"choices": [tru`}, 2, "not JSON"},
		{"401", llmstub.Reply{Status: 401, Message: "Incorrect API key provided: " + testKey}, 1, "HTTP 401"},
		{"unknown model", llmstub.Reply{Status: 404, Message: "The model `m-a` does not exist"}, 1, "HTTP 404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := stub(t, func(*llmstub.Request) llmstub.Reply { return tc.reply })
			b := stub(t, nil)
			e := newEnv(t, one(""), providersYAML(t, provider("a", a, "m-a", ""), provider("b", b, "m-b", "")), envOpts{})
			id := e.completes(t, "ask", map[string]string{"q": "hi"})
			out := e.output(t, id, "ask")
			if out.Provider != "b" || out.Model != "m-b" {
				t.Errorf("answered by %s (%s), want b", out.Provider, out.Model)
			}
			if len(out.Fallbacks) != 1 || out.Fallbacks[0].Provider != "a" || !strings.Contains(out.Fallbacks[0].Reason, tc.reasonHas) {
				t.Errorf("fallbacks %+v: want a passed over for %q", out.Fallbacks, tc.reasonHas)
			}
			if a.Count() != tc.callsToA || b.Count() != 1 {
				t.Errorf("calls a=%d b=%d, want %d and 1", a.Count(), b.Count(), tc.callsToA)
			}
			if e.obs.get("b/fallback") != 1 || e.obs.get("a/error") != int(tc.callsToA) {
				t.Errorf("calls counted %v: want b/fallback 1, a/error %d", e.obs.calls, tc.callsToA)
			}
			if strings.Contains(out.Fallbacks[0].Reason, testKey) {
				t.Errorf("the fallback reason %q holds the API key", out.Fallbacks[0].Reason)
			}
		})
	}
}

// TestPermanentOnLastProvider: a 400 is permanent at once, with no fallback; 401, 404 and
// the rest of the reasons are permanent on the last provider. Neither the DLQ, the node
// state, the run's end nor the logs show the API key, though the server echoed it back.
func TestPermanentOnLastProvider(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		reply llmstub.Reply
		calls int64 // to a
	}{
		{"400", llmstub.Reply{Status: 400, Message: "max_tokens is too large; key " + testKey}, 1},
		{"401", llmstub.Reply{Status: 401, Message: "Incorrect API key provided: " + testKey}, 1},
		{"unknown model", llmstub.Reply{Status: 404, Message: "The model `m-a` does not exist"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := stub(t, func(*llmstub.Request) llmstub.Reply { return tc.reply })
			b := stub(t, nil)
			def := one("      providers: [a]\n")
			if tc.name == "400" {
				def = one("") // b is there, and not used: a 400 is the request's fault
			}
			e := newEnv(t, def, providersYAML(t, provider("a", a, "m-a", ""), provider("b", b, "m-b", "")), envOpts{})
			id := e.start(t, "ask", map[string]string{"q": "hi"})
			end := e.wait(t, id, 60*time.Second)
			if end.Status != checkpoint.EndFailed || !strings.Contains(end.Reason, "node ask: permanent error") {
				t.Fatalf("run ended %s (%s), want failed: node ask: permanent error", end.Status, end.Reason)
			}
			if a.Count() != tc.calls || b.Count() != 0 {
				t.Errorf("calls a=%d b=%d, want %d and 0", a.Count(), b.Count(), tc.calls)
			}
			st, _, _ := e.store.Node(context.Background(), id, "ask")
			entries, err := dlq.List(context.Background(), e.js, e.names, dlq.Filter{})
			if err != nil || len(entries) != 1 {
				t.Fatalf("DLQ %v, %v: want one entry", entries, err)
			}
			raw, _ := json.Marshal(entries)
			for what, text := range map[string]string{"node state": st.LastError, "end": end.Reason, "DLQ": string(raw), "logs": e.logs.String()} {
				if strings.Contains(text, testKey) {
					t.Errorf("the %s holds the API key: %s", what, text)
				}
			}
			if !strings.Contains(st.LastError, "provider a: HTTP") {
				t.Errorf("last error %q does not name the provider and status", st.LastError)
			}
		})
	}
}

// TestProviderOutageTwoWorkers: the primary fails every call; its breaker trips (shared by
// both workers), calls to it stop, and every run completes on the secondary.
func TestProviderOutageTwoWorkers(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply { return llmstub.Reply{Status: 503, Message: "down"} })
	b := stub(t, nil)
	e := newEnv(t, one(""), providersYAML(t,
		provider("a", a, "m-a", "    breaker: {consecutive_failures: 3, open_for: 5m}\n"),
		provider("b", b, "m-b", "")), envOpts{workers: 2})
	runs := func() {
		var ids []string
		for range 20 {
			ids = append(ids, e.start(t, "ask", map[string]string{"q": "hi"}))
		}
		for _, id := range ids {
			if end := e.wait(t, id, 90*time.Second); end.Status != checkpoint.EndCompleted {
				t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
			}
			if out := e.output(t, id, "ask"); out.Provider != "b" {
				t.Errorf("run %s answered by %s, want b", id, out.Provider)
			}
		}
	}
	// Twenty runs at once meet the outage: the calls in flight when the breaker trips
	// land, and none after.
	runs()
	first := a.Count()
	if first < 3 || first > 40 {
		t.Errorf("%d calls reached the broken provider, want 3 (the trip) to 40 (two each)", first)
	}
	// Twenty more, with the breaker open: not one call to a.
	runs()
	if n := a.Count(); n != first {
		t.Errorf("%d more calls reached the broken provider while its breaker was open, want 0", n-first)
	}
	if b.Count() != 40 {
		t.Errorf("%d calls to b, want 40", b.Count())
	}
	if e.obs.get("b/fallback") != 40 {
		t.Errorf("fallbacks counted %d, want 40", e.obs.get("b/fallback"))
	}
}

// TestCacheAcrossRunsAndWorkers: the same request in a second run is answered from the
// cache, by whichever worker runs it, at no cost, with the original usage.
func TestCacheAcrossRunsAndWorkers(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply {
		return llmstub.Reply{Content: "Paris", PromptTokens: 30, CompletionTokens: 2}
	})
	e := newEnv(t, one("      cache: true\n"), providersYAML(t, provider("a", a, "m-a", "")), envOpts{workers: 2})
	first := e.completes(t, "ask", map[string]string{"q": "capital of France?"})
	var outs []*llm.Output
	for range 4 {
		outs = append(outs, e.output(t, e.completes(t, "ask", map[string]string{"q": "capital of France?"}), "ask"))
	}
	if a.Count() != 1 {
		t.Errorf("%d calls, want 1: the rest come from the cache", a.Count())
	}
	if o := e.output(t, first, "ask"); o.Cached || o.CostUSD == 0 {
		t.Errorf("first run %+v: want a paid call", o)
	}
	for _, o := range outs {
		if !o.Cached || o.CostUSD != 0 || o.Content != "Paris" || o.Usage.InputTokens != 30 {
			t.Errorf("cached answer %+v: want cached, cost 0, the original content and usage", o)
		}
	}
	if e.obs.get("a/cached") != 4 {
		t.Errorf("cached calls counted %d, want 4", e.obs.get("a/cached"))
	}
	// A different question is a different key.
	e.completes(t, "ask", map[string]string{"q": "capital of Spain?"})
	if a.Count() != 2 {
		t.Errorf("%d calls after a new question, want 2", a.Count())
	}
	// The key holds no API key.
	kv, err := e.js.KeyValue(context.Background(), e.names.CacheBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		if strings.Contains(k, testKey) {
			t.Errorf("cache key %s holds the API key", k)
		}
		en, err := kv.Get(context.Background(), k)
		if err == nil && strings.Contains(string(en.Value()), testKey) {
			t.Errorf("cache entry %s holds the API key", k)
		}
	}
}

// TestBudgetHoldsWithFourWorkers: eight parallel llm nodes of one run race on four workers
// against a budget of three calls' cost. The run fails with "budget exceeded", and what it
// spent stays under the budget plus one call's reservation.
func TestBudgetHoldsWithFourWorkers(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply {
		// Each call costs 4 × $1000/M + 5 × $2000/M = $0.014, as estimated.
		return llmstub.Reply{Delay: 50 * time.Millisecond, PromptTokens: 4, CompletionTokens: 5}
	})
	var b strings.Builder
	b.WriteString("name: many\nbudget: {usd: 0.06}\nnodes:\n")
	for i := range 8 {
		b.WriteString("  - name: n" + string(rune('0'+i)) + "\n    type: llm\n    with: {model: fast, max_tokens: 5, messages: [{role: user, content: hi}]}\n")
	}
	e := newEnv(t, b.String(), providersYAML(t, provider("a", a, "m-a", "")), envOpts{workers: 4})
	id := e.start(t, "many", nil)
	end := e.wait(t, id, 60*time.Second)
	if end.Status != checkpoint.EndFailed || !strings.HasSuffix(end.Reason, ": budget exceeded") {
		t.Fatalf("run ended %s (%s), want failed with budget exceeded", end.Status, end.Reason)
	}
	// Wait for the other branches to settle.
	natstest.Eventually(t, 30*time.Second, func() bool {
		nodes, err := e.store.NodeStates(context.Background(), id)
		if err != nil {
			return false
		}
		settled := 0
		for _, st := range nodes {
			if st.Status == checkpoint.StatusDone || st.Status == checkpoint.StatusDead {
				settled++
			}
		}
		return settled == 8
	}, "the eight nodes never settled")
	sp, err := e.store.Spend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	// The reservation of a call is its estimate: 2/4+4 prompt tokens and max_tokens 5,
	// $0.014; a call starts only while spent + reserved < $0.06, so five at most.
	const oneCall = 0.014
	if sp.USD >= 0.06+oneCall {
		t.Errorf("the run spent $%.4f, over the $0.06 budget by more than one call", sp.USD)
	}
	if int64(math.Round(sp.USD/oneCall)) != a.Count() {
		t.Errorf("spent $%.4f for %d calls of $%.2f", sp.USD, a.Count(), oneCall)
	}
	if a.Count() < 4 || a.Count() > 5 {
		t.Errorf("%d calls made, want 4 or 5 (the budget is 4.3 calls)", a.Count())
	}
	dead := 0
	entries, _ := dlq.List(context.Background(), e.js, e.names, dlq.Filter{})
	for _, en := range entries {
		if en.Reason == "budget exceeded" {
			dead++
		}
	}
	if dead == 0 || dead+int(a.Count()) != 8 {
		t.Errorf("%d DLQ entries with reason budget exceeded and %d calls; want them to add up to 8", dead, a.Count())
	}
	if len(sp.Reserved) != 0 {
		t.Errorf("reservations left behind: %v", sp.Reserved)
	}
}

// TestLostAnswerCountsAsWasted: the first answer never reaches the checkpoint (the handler
// is cut off after the call, as when the worker dies there); the node runs again, and the
// first call's cost is counted as wasted, on the run and in the metrics.
func TestLostAnswerCountsAsWasted(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply { return llmstub.Reply{PromptTokens: 10, CompletionTokens: 5} })
	var lost atomic.Bool
	e := newEnv(t, one(""), providersYAML(t, provider("a", a, "m-a", "")), envOpts{
		wrap: func(_ int, _ func(), h consumer.HandlerFunc) consumer.HandlerFunc {
			return func(ctx context.Context, s *consumer.Step) (any, error) {
				out, err := h(ctx, s)
				if err == nil && lost.CompareAndSwap(false, true) {
					return nil, context.DeadlineExceeded // the answer is lost on its way to the checkpoint
				}
				return out, err
			}
		},
	})
	id := e.completes(t, "ask", map[string]string{"q": "hi"})
	sp, err := e.store.Spend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Count() != 2 || math.Abs(sp.USD-0.04) > 1e-9 || math.Abs(sp.WastedUSD-0.02) > 1e-9 {
		t.Errorf("calls %d, spend %+v: want 2 calls, $0.04 spent of which $0.02 wasted", a.Count(), sp)
	}
	e.obs.mu.Lock()
	wasted := e.obs.wasted
	e.obs.mu.Unlock()
	if math.Abs(wasted-0.02) > 1e-9 {
		t.Errorf("wasted counted $%v, want $0.02", wasted)
	}
}

// TestReplayCountsSaved: a run whose llm node is done fails on its next node; replaying
// that node from the DLQ resumes the run without calling the model again, and the llm
// node's cost is counted as saved, on the run and in jetflow_cost_saved_usd_total.
func TestReplayCountsSaved(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply { return llmstub.Reply{PromptTokens: 10, CompletionTokens: 5} })
	var fixed atomic.Bool
	e := newEnv(t, one("")+`  - name: store
    type: store
    needs: [ask]
`, providersYAML(t, provider("a", a, "m-a", "")), envOpts{extra: map[string]consumer.HandlerFunc{
		"store": func(context.Context, *consumer.Step) (any, error) {
			if !fixed.Load() {
				return nil, consumer.Permanent(errors.New("the database refuses the write"))
			}
			return "stored", nil
		},
	}})
	id := e.start(t, "ask", map[string]string{"q": "hi"})
	if end := e.wait(t, id, 60*time.Second); end.Status != checkpoint.EndFailed {
		t.Fatalf("run ended %s, want failed", end.Status)
	}
	entries, err := dlq.List(context.Background(), e.js, e.names, dlq.Filter{RunID: id})
	if err != nil || len(entries) != 1 {
		t.Fatalf("DLQ %v, %v: want the store node", entries, err)
	}
	fixed.Store(true)
	if _, err := dlq.Replay(context.Background(), e.js, e.store, e.names, entries[0].ID, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if end := e.wait(t, id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("the replayed run ended %s (%s), want completed", end.Status, end.Reason)
	}
	if a.Count() != 1 {
		t.Errorf("%d model calls, want 1: the replay resumes after the done llm node", a.Count())
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		sp, err := e.store.Spend(context.Background(), id)
		return err == nil && math.Abs(sp.SavedUSD-0.02) < 1e-9
	}, "the run's saved_usd never became $0.02")
	if v := e.counterValue(t, "jetflow_cost_saved_usd_total"); math.Abs(v-0.02) > 1e-9 {
		t.Errorf("jetflow_cost_saved_usd_total = %v, want 0.02", v)
	}
}

// TestForEachSpendAddsUp: a for_each llm node over 40 items, 10 at once on two workers,
// all writing one run's spend: every call is recorded once, and the run's cost is their sum.
func TestForEachSpendAddsUp(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply {
		return llmstub.Reply{Delay: 20 * time.Millisecond, PromptTokens: 10, CompletionTokens: 5}
	})
	e := newEnv(t, `name: fan
nodes:
  - name: ask
    type: llm
    for_each: ${{ input.items }}
    max_parallel: 10
    with:
      model: fast
      messages: [{role: user, content: "item ${{ item }}"}]
`, providersYAML(t, provider("a", a, "m-a", "")), envOpts{workers: 2})
	items := make([]int, 40)
	for i := range items {
		items[i] = i
	}
	id := e.completes(t, "fan", map[string]any{"items": items})
	sp, err := e.store.Spend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, ns := range sp.Nodes {
		calls += ns.Calls
	}
	// $0.02 a call.
	if a.Count() != 40 || calls != 40 || len(sp.Nodes) != 40 || math.Abs(sp.USD-0.8) > 1e-9 || len(sp.Reserved) != 0 {
		t.Errorf("%d calls made, %d recorded over %d items, $%.4f spent, %d reserved: want 40, 40, 40, $0.80, 0",
			a.Count(), calls, len(sp.Nodes), sp.USD, len(sp.Reserved))
	}
	if strings.Contains(e.logs.String(), "cannot record the call's cost") {
		t.Errorf("a call's cost was not recorded:\n%s", e.logs.String())
	}
}

// TestTokensPerMinuteSettlesToUsage: the primary allows 100 tokens a minute. The first call
// reserves max_tokens 50 plus its prompt estimate (~10), and its reply says it used 90: the
// limit is settled to the 90, so the second call would wait ~30 s for its 60, past max_wait
// (20 s), and goes to the secondary. (Left at the estimate, it would wait ~12 s, within
// max_wait, on the primary.)
func TestTokensPerMinuteSettlesToUsage(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply { return llmstub.Reply{PromptTokens: 80, CompletionTokens: 10} })
	b := stub(t, nil)
	e := newEnv(t, one("      max_wait: 20s\n"), providersYAML(t,
		provider("a", a, "m-a", "    rate: {tokens_per_minute: 100}\n"), provider("b", b, "m-b", "")), envOpts{})
	first := e.output(t, e.completes(t, "ask", map[string]string{"q": "hi"}), "ask")
	second := e.output(t, e.completes(t, "ask", map[string]string{"q": "hi"}), "ask")
	if first.Provider != "a" || second.Provider != "b" {
		t.Fatalf("answered by %s then %s, want a then b", first.Provider, second.Provider)
	}
	if len(second.Fallbacks) != 1 || !strings.Contains(second.Fallbacks[0].Reason, "tokens_per_minute is used up") {
		t.Errorf("fallbacks %+v: want a passed over for its token limit", second.Fallbacks)
	}
	if a.Count() != 1 {
		t.Errorf("%d calls to a, want 1", a.Count())
	}
}

// TestWorkerKilledAfterTheCall: the first worker gets its answer and is cut off from NATS
// before the checkpoint (as a kill would leave it); the step comes back to the second
// worker after the ack wait, which calls again: the first call's cost is counted as wasted,
// on the run and to the metrics observer (jetflow_llm_wasted_cost_usd_total).
func TestWorkerKilledAfterTheCall(t *testing.T) {
	t.Parallel()
	a := stub(t, func(*llmstub.Request) llmstub.Reply { return llmstub.Reply{PromptTokens: 10, CompletionTokens: 5} })
	var killed atomic.Bool
	e := newEnv(t, one(""), providersYAML(t, provider("a", a, "m-a", "")), envOpts{workers: 2,
		wrap: func(_ int, cut func(), h consumer.HandlerFunc) consumer.HandlerFunc {
			return func(ctx context.Context, s *consumer.Step) (any, error) {
				out, err := h(ctx, s)
				if err == nil && killed.CompareAndSwap(false, true) {
					cut()        // the worker is gone: nothing it does now reaches NATS
					<-ctx.Done() // and it never returns before its shutdown
					return nil, ctx.Err()
				}
				return out, err
			}
		},
	})
	id := e.completes(t, "ask", map[string]string{"q": "hi"})
	sp, err := e.store.Spend(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Count() != 2 || math.Abs(sp.WastedUSD-0.02) > 1e-9 || math.Abs(sp.USD-0.04) > 1e-9 {
		t.Errorf("calls %d, spend %+v: want 2 calls, $0.04 spent, $0.02 of it wasted", a.Count(), sp)
	}
	e.obs.mu.Lock()
	wasted := e.obs.wasted
	e.obs.mu.Unlock()
	if math.Abs(wasted-0.02) > 1e-9 {
		t.Errorf("wasted counted $%v (what jetflow_llm_wasted_cost_usd_total adds), want $0.02", wasted)
	}
}
