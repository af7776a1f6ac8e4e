package llm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/llmstub"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/nodes/llm"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// testKey is the API key every stub provider expects; tests check it never leaks.
const testKey = "sk-test-4f8a1c9e2b7d6a5f3e0c"

// counter counts the llm calls the workers report, by provider and outcome.
type counter struct {
	mu     sync.Mutex
	calls  map[string]int // "provider/outcome"
	usd    float64
	wasted float64
}

func (c *counter) LLMCall(provider, _, outcome string, _, _ int64, usd float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[provider+"/"+outcome]++
	c.usd += usd
}

func (c *counter) LLMWasted(usd float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wasted += usd
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[key]
}

// syncBuffer is a log sink shared by the workers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a NATS server set up for jetflow, a workflow applied, and workers running the
// built-in types and the llm node with a providers file.
type env struct {
	js    jetstream.JetStream
	names workflow.Names
	store *checkpoint.Store
	prod  *producer.Producer
	obs   *counter
	logs  *syncBuffer
	reg   *prometheus.Registry // the workers' metrics
}

type envOpts struct {
	workers int
	// wrap, when set, wraps the llm handler of worker i (to lose an answer, for one); cut
	// closes that worker's own connection to NATS, as a kill would.
	wrap func(i int, cut func(), h consumer.HandlerFunc) consumer.HandlerFunc
	// extra registers more node types.
	extra map[string]consumer.HandlerFunc
}

// providersYAML renders a providers file; each entry is name → stub.
func providersYAML(t *testing.T, entries ...string) []byte {
	t.Helper()
	return []byte("providers:\n" + strings.Join(entries, ""))
}

// provider renders one provider entry pointing at s, with the alias "fast" for model m.
func provider(name string, s *llmstub.Server, model string, extra string) string {
	return fmt.Sprintf(`  - name: %s
    base_url: %s
    api_key_env: LLM_TEST_KEY
    models: {fast: %s}
    price: {input_per_mtok: 1000, output_per_mtok: 2000}
    timeout: 2s
%s`, name, s.BaseURL(), model, extra)
}

func newEnv(t *testing.T, def string, providers []byte, o envOpts) *env {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 5*time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse("def.yaml", []byte(def), workflow.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	file, err := llm.ParseFile("providers.yaml", providers, func(k string) string {
		if k == "LLM_TEST_KEY" {
			return testKey
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := js.KeyValue(ctx, names.CacheBucket())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{js: js, names: names, store: store, obs: &counter{}, logs: &syncBuffer{}, reg: prometheus.NewRegistry(),
		prod: producer.New(js, store, producer.Config{Names: names})}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New(e.reg, metrics.Options{})
	for i := range max(o.workers, 1) {
		wnc, wjs := srv.Connect(t)
		wstore, err := checkpoint.Open(ctx, wjs, names)
		if err != nil {
			t.Fatal(err)
		}
		w, err := consumer.New(wjs, wstore, consumer.Config{Names: names, ID: fmt.Sprintf("w%d", i+1), Logger: logger, Observer: m})
		if err != nil {
			t.Fatal(err)
		}
		nodes.Register(w)
		n, err := llm.New(llm.Config{Providers: file, Worker: w, Cache: cache, Observer: e.obs, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		h := consumer.HandlerFunc(n.Handle)
		if o.wrap != nil {
			h = o.wrap(i, wnc.Close, h)
		}
		w.Handle(llm.Type, h)
		for typ, eh := range o.extra {
			w.Handle(typ, eh)
		}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() { stop(); <-done })
	}
	return e
}

func (e *env) start(t *testing.T, wf string, input any) string {
	t.Helper()
	b, _ := json.Marshal(input)
	id, err := e.prod.Start(context.Background(), wf, b, producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) wait(t *testing.T, id string, within time.Duration) *checkpoint.End {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	end, err := e.store.WaitEnd(ctx, id)
	if err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	return end
}

// output reads a done node's output as an llm.Output.
func (e *env) output(t *testing.T, run, node string) *llm.Output {
	t.Helper()
	st, _, err := e.store.Node(context.Background(), run, node)
	if err != nil || st == nil {
		t.Fatalf("node %s of run %s: %v (state %v)", node, run, err, st)
	}
	if st.Status != checkpoint.StatusDone {
		t.Fatalf("node %s is %s (%s), want done", node, st.Status, st.LastError)
	}
	var out llm.Output
	if err := json.Unmarshal(st.Output, &out); err != nil {
		t.Fatalf("output %s: %v", st.Output, err)
	}
	return &out
}

// completes starts a run of wf and requires it to complete.
func (e *env) completes(t *testing.T, wf string, input any) string {
	t.Helper()
	id := e.start(t, wf, input)
	if end := e.wait(t, id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run %s ended %s (%s), want completed", id, end.Status, end.Reason)
	}
	return id
}

// counterValue reads a counter without labels from the workers' metrics.
func (e *env) counterValue(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}
