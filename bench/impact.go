package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/internal/llmstub"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// ImpactConfig is the workload and the faults of the impact benchmark: Runs four-step AI
// workflows (fetch → summarize (llm) → classify (llm) → store) arriving evenly over Over,
// against two local chat completions servers. Both fail FailRate of their calls at random;
// the primary also answers 429 (Retry-After: 1) for BurstFor every BurstEvery, and is down
// (503) for OutageFor from OutageAt.
type ImpactConfig struct {
	Runs                 int
	Over                 time.Duration
	FailRate             float64
	OutageAt, OutageFor  time.Duration
	BurstEvery, BurstFor time.Duration
	// Latency is a call's mean time to answer.
	Latency time.Duration
	// KillAt is when, in the jetflow run, one of the two workers is killed (SIGKILL); it is
	// started again KillFor later.
	KillAt, KillFor time.Duration
	// Seed makes the faults repeatable.
	Seed uint64
	// StartWorker starts a jetflow worker process on natsURL, prefix and providers file,
	// logging to log; the benchmark kills and stops it through the returned process.
	StartWorker func(ctx context.Context, natsURL, prefix, providers, log string) (*os.Process, error)
	// Logf receives progress (optional).
	Logf func(format string, args ...any)
}

// WithDefaults fills the zero fields with the workload: 500 runs over a minute, 17 %
// of calls failing, a 30-second outage of the primary from 15 s, a 1-second 429 burst every
// 10 s, 100 ms calls, a worker killed at half time for 5 s.
func (c ImpactConfig) WithDefaults() ImpactConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Runs == 0 {
		c.Runs = 500
	}
	def(&c.Over, time.Minute)
	if c.FailRate == 0 {
		c.FailRate = 0.17
	}
	def(&c.OutageAt, 15*time.Second)
	def(&c.OutageFor, 30*time.Second)
	def(&c.BurstEvery, 10*time.Second)
	def(&c.BurstFor, time.Second)
	def(&c.Latency, 100*time.Millisecond)
	def(&c.KillAt, c.Over/2)
	def(&c.KillFor, 5*time.Second)
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// Prices of the two stub providers, USD per million tokens (a large and a small model).
var (
	primaryPrice   = [2]float64{2.5, 10}
	secondaryPrice = [2]float64{0.15, 0.6}
)

func price(provider string, in, out int64) float64 {
	p := primaryPrice
	if provider == "secondary" {
		p = secondaryPrice
	}
	return (float64(in)*p[0] + float64(out)*p[1]) / 1e6
}

// ImpactMode is what one way of running the workload did.
type ImpactMode struct {
	Name string `json:"name"`
	// Runs is how many started; Failed how many did not complete.
	Runs      int     `json:"runs"`
	Failed    int     `json:"failed"`
	FailedPct float64 `json:"failed_pct"`
	// Calls is every call the providers received; Wasted those whose answer no completed
	// run used (failed calls, answers of failed runs, answers lost to the killed worker).
	Calls  int `json:"calls"`
	Wasted int `json:"calls_wasted"`
	// AnswersWasted counts the answered (paid) calls among the wasted ones.
	AnswersWasted int `json:"answers_wasted"`
	// TokensWasted and USDWasted are the answered calls' tokens and cost that no completed
	// run used.
	TokensWasted int64   `json:"tokens_wasted"`
	USDWasted    float64 `json:"usd_wasted"`
	// RecoverySeconds is from the outage's end until answers per second are back to 90 %
	// of their rate before it (0: they never fell; -1: they never came back).
	RecoverySeconds float64 `json:"recovery_seconds"`
	// PrimaryBackSeconds is from the outage's end to the primary's first answer (-1: none).
	PrimaryBackSeconds float64 `json:"primary_back_seconds"`
	// P95 is the 95th percentile of completed runs' durations.
	P95 time.Duration `json:"p95_run"`
	// Series counts calls per second since the start, by "<provider> ok|failed".
	Series map[string][]int `json:"series"`
}

// ImpactResult holds the three modes.
type ImpactResult struct {
	Config ImpactConfig  `json:"-"`
	Modes  []*ImpactMode `json:"modes"`
}

// faults scripts both stubs from the time since start.
type faults struct {
	cfg   ImpactConfig
	mu    sync.Mutex
	rng   *rand.Rand
	start time.Time
}

func (f *faults) script(primary bool) func(*llmstub.Request) llmstub.Reply {
	return func(r *llmstub.Request) llmstub.Reply {
		t := time.Since(f.start)
		f.mu.Lock()
		roll, jitter := f.rng.Float64(), f.rng.Float64()
		f.mu.Unlock()
		delay := time.Duration(float64(f.cfg.Latency) * (0.5 + jitter))
		switch {
		case primary && t >= f.cfg.OutageAt && t < f.cfg.OutageAt+f.cfg.OutageFor:
			return llmstub.Reply{Status: http.StatusServiceUnavailable, Message: "the service is down", Delay: 10 * time.Millisecond}
		case primary && f.cfg.BurstEvery > 0 && t%f.cfg.BurstEvery < f.cfg.BurstFor:
			return llmstub.Reply{Status: http.StatusTooManyRequests, RetryAfter: "1", Message: "rate limit reached"}
		case roll < f.cfg.FailRate:
			return llmstub.Reply{Status: http.StatusInternalServerError, Message: "internal error", Delay: delay / 2}
		}
		return llmstub.Reply{Content: "answer to: " + short(r.Messages[len(r.Messages)-1].Content, 40), CompletionTokens: 120, Delay: delay}
	}
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// document is what the fetch step brings: about 250 tokens of text.
var document = strings.Repeat("Quarterly revenue grew while costs fell in most regions. ", 18)

// runOutcome is one run as a mode saw it.
type runOutcome struct {
	ok       bool
	took     time.Duration
	tokens   int64   // of the answers it used
	usd      float64 // of the answers it used
	answered int     // answers it used (2 when ok)
}

// Impact runs the workload three ways — no resilience, retries only (openai-go's default
// retries), and jetflow (breakers, the fallback provider, checkpoints, a worker killed) —
// each against fresh stubs.
func Impact(ctx context.Context, cfg ImpactConfig) (*ImpactResult, error) {
	cfg = cfg.WithDefaults()
	if cfg.StartWorker == nil {
		return nil, errors.New("impact: StartWorker is required")
	}
	res := &ImpactResult{Config: cfg}
	for _, m := range []struct {
		name string
		run  func(context.Context, ImpactConfig, *llmstub.Server, *llmstub.Server, time.Time) ([]runOutcome, error)
	}{
		{"no resilience", handLoop(0)},
		{"retries only", handLoop(-1)},
		{"jetflow", jetflowMode},
	} {
		f := &faults{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 7))}
		primary, secondary := llmstub.Start(f.script(true)), llmstub.Start(f.script(false))
		cfg.Logf("impact: %s: %d runs over %s", m.name, cfg.Runs, cfg.Over)
		f.start = time.Now()
		outs, err := m.run(ctx, cfg, primary, secondary, f.start)
		primary.Close()
		secondary.Close()
		if err != nil {
			return nil, fmt.Errorf("impact: %s: %w", m.name, err)
		}
		res.Modes = append(res.Modes, summarize(m.name, cfg, f.start, outs, primary.Calls(), secondary.Calls()))
	}
	return res, nil
}

// summarize turns a mode's runs and the stubs' call logs into its figures.
func summarize(name string, cfg ImpactConfig, start time.Time, outs []runOutcome, pc, sc []llmstub.Request) *ImpactMode {
	m := &ImpactMode{Name: name, Runs: len(outs), Series: map[string][]int{}}
	var took []time.Duration
	used := 0
	var usedTokens int64
	var usedUSD float64
	for _, o := range outs {
		if !o.ok {
			m.Failed++
			continue
		}
		took = append(took, o.took)
		used += o.answered
		usedTokens += o.tokens
		usedUSD += o.usd
	}
	m.FailedPct = 100 * float64(m.Failed) / float64(max(len(outs), 1))
	var answeredTokens int64
	var answeredUSD float64
	answered := 0
	outageEnd := start.Add(cfg.OutageAt + cfg.OutageFor)
	m.PrimaryBackSeconds = -1
	answers := map[int][]int{} // second → answers in it
	for _, p := range []struct {
		name  string
		calls []llmstub.Request
	}{{"primary", pc}, {"secondary", sc}} {
		for _, c := range p.calls {
			m.Calls++
			sec := int(c.At.Sub(start) / time.Second)
			key := p.name + " failed"
			if c.Status == http.StatusOK {
				key = p.name + " ok"
				answered++
				if back := c.At.Sub(outageEnd).Seconds(); p.name == "primary" && back >= 0 && (m.PrimaryBackSeconds < 0 || back < m.PrimaryBackSeconds) {
					m.PrimaryBackSeconds = back
				}
				answeredTokens += c.PromptTokens + c.CompletionTokens
				answeredUSD += price(p.name, c.PromptTokens, c.CompletionTokens)
				answers[sec] = append(answers[sec], 1)
			}
			s := m.Series[key]
			for len(s) <= sec {
				s = append(s, 0)
			}
			s[sec]++
			m.Series[key] = s
		}
	}
	m.Wasted = m.Calls - used
	m.AnswersWasted = answered - used
	m.TokensWasted = answeredTokens - usedTokens
	m.USDWasted = max(answeredUSD-usedUSD, 0)
	m.RecoverySeconds = recovery(cfg, answers)
	if len(took) > 0 {
		slices.Sort(took)
		m.P95 = took[min(len(took)-1, int(0.95*float64(len(took))))]
	}
	return m
}

// recovery is how long after the outage answers per second were back to 90 % of their rate
// before it, over a 2-second window.
func recovery(cfg ImpactConfig, answers map[int][]int) float64 {
	rate := func(from, to int) float64 {
		n := 0
		for s := from; s < to; s++ {
			n += len(answers[s])
		}
		return float64(n) / float64(max(to-from, 1))
	}
	before := rate(3, int(cfg.OutageAt/time.Second))
	end := int((cfg.OutageAt + cfg.OutageFor) / time.Second)
	last := int(cfg.Over/time.Second) - 2
	if rate(int(cfg.OutageAt/time.Second)+1, end) >= 0.9*before {
		return 0
	}
	for s := end; s < last; s++ {
		if rate(s, s+2) >= 0.9*before {
			return float64(s - end)
		}
	}
	return -1
}

// handLoop is the program a user writes without jetflow: each run a goroutine that calls the
// two models in turn with openai-go, failing on the first error. retries is the client's
// retry count: 0, or -1 for the library's default.
func handLoop(retries int) func(context.Context, ImpactConfig, *llmstub.Server, *llmstub.Server, time.Time) ([]runOutcome, error) {
	return func(ctx context.Context, cfg ImpactConfig, primary, _ *llmstub.Server, start time.Time) ([]runOutcome, error) {
		opts := []option.RequestOption{option.WithBaseURL(primary.BaseURL()), option.WithAPIKey("sk-bench")}
		if retries >= 0 {
			opts = append(opts, option.WithMaxRetries(retries))
		}
		svc := openai.NewChatCompletionService(opts...)
		outs := make([]runOutcome, cfg.Runs)
		var wg sync.WaitGroup
		for i := range cfg.Runs {
			at := start.Add(time.Duration(i) * cfg.Over / time.Duration(cfg.Runs))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !sleepUntil(ctx, at) {
					return
				}
				t0 := time.Now()
				ask := func(prompt string) (*openai.ChatCompletion, error) {
					cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
					defer cancel()
					return svc.New(cctx, openai.ChatCompletionNewParams{Model: shared.ChatModel("big-model"), MaxTokens: openai.Int(150),
						Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}})
				}
				a, err := ask("Summarize: " + document)
				if err != nil {
					return
				}
				b, err := ask("Classify: " + a.Choices[0].Message.Content)
				if err != nil {
					return
				}
				tok := a.Usage.TotalTokens + b.Usage.TotalTokens
				outs[i] = runOutcome{ok: true, took: time.Since(t0), tokens: tok, answered: 2,
					usd: price("primary", a.Usage.PromptTokens, a.Usage.CompletionTokens) + price("primary", b.Usage.PromptTokens, b.Usage.CompletionTokens)}
			}()
		}
		wg.Wait()
		return outs, ctx.Err()
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// impactWorkflow is the jetflow definition of the workload.
const impactWorkflow = `name: impact
nodes:
  - name: fetch
    type: noop
    with: {output: {doc: %q}}
  - name: summarize
    type: llm
    needs: [fetch]
    with:
      model: chat
      max_tokens: 150
      messages: [{role: user, content: "Summarize: ${{ nodes.fetch.doc }}"}]
  - name: classify
    type: llm
    needs: [summarize]
    with:
      model: chat
      max_tokens: 150
      messages: [{role: user, content: "Classify: ${{ nodes.summarize.content }}"}]
  - name: store
    type: noop
    needs: [classify]
`

// impactProviders is the providers file: the primary behind a breaker, the secondary its
// fallback.
const impactProviders = `providers:
  - name: primary
    base_url: %s
    models: {chat: big-model}
    price: {input_per_mtok: %g, output_per_mtok: %g}
    breaker: {consecutive_failures: 5, open_for: 10s}
  - name: secondary
    base_url: %s
    models: {chat: small-model}
    price: {input_per_mtok: %g, output_per_mtok: %g}
`

// jetflowMode runs the workload on jetflow: an embedded server, two worker processes with
// both providers, one killed at KillAt and started again KillFor later.
func jetflowMode(ctx context.Context, cfg ImpactConfig, primary, secondary *llmstub.Server, start time.Time) ([]runOutcome, error) {
	dir, err := os.MkdirTemp("", "jetflow-impact-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	srv, err := embedded.Start(embedded.Options{StoreDir: filepath.Join(dir, "js"), Port: -1})
	if err != nil {
		return nil, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	names := workflow.MustNames("impact")
	if _, err := setup.Run(ctx, js, setup.Config{Names: names}); err != nil {
		return nil, err
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	wf, err := workflow.Parse("impact.yaml", fmt.Appendf(nil, impactWorkflow, document), workflow.ValidateOptions{})
	if err != nil {
		return nil, err
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		return nil, err
	}
	providers := filepath.Join(dir, "providers.yaml")
	body := fmt.Sprintf(impactProviders, primary.BaseURL(), primaryPrice[0], primaryPrice[1], secondary.BaseURL(), secondaryPrice[0], secondaryPrice[1])
	if err := os.WriteFile(providers, []byte(body), 0o600); err != nil {
		return nil, err
	}
	var procs [2]*os.Process
	startW := func(i int) error {
		p, err := cfg.StartWorker(ctx, srv.ClientURL(), "impact", providers, filepath.Join(dir, fmt.Sprintf("worker%d.log", i)))
		procs[i] = p
		return err
	}
	for i := range procs {
		if err := startW(i); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, p := range procs {
			if p != nil {
				_ = p.Signal(os.Interrupt)
				_, _ = p.Wait()
			}
		}
	}()
	// The workers are up when both have claimed their presence.
	if err := waitWorkers(ctx, js, names, 2); err != nil {
		return nil, err
	}
	prod := producer.New(js, store, producer.Config{Names: names})
	ids := make([]string, cfg.Runs)
	created := make([]time.Time, cfg.Runs)
	startErr := make(chan error, 1)
	go func() {
		for i := range cfg.Runs {
			if !sleepUntil(ctx, start.Add(time.Duration(i)*cfg.Over/time.Duration(cfg.Runs))) {
				startErr <- ctx.Err()
				return
			}
			created[i] = time.Now()
			id, err := prod.Start(ctx, "impact", []byte(`{}`), producer.StartOptions{})
			if err != nil {
				startErr <- err
				return
			}
			ids[i] = id
		}
		startErr <- nil
	}()
	if sleepUntil(ctx, start.Add(cfg.KillAt)) {
		cfg.Logf("impact: jetflow: killing worker 0 (pid %d)", procs[0].Pid)
		_ = procs[0].Kill()
		_, _ = procs[0].Wait()
		procs[0] = nil
		if sleepUntil(ctx, time.Now().Add(cfg.KillFor)) {
			if err := startW(0); err != nil {
				return nil, err
			}
		}
	}
	if err := <-startErr; err != nil {
		return nil, err
	}
	// Every run ends: a failure is recorded, not waited on for ever.
	outs := make([]runOutcome, cfg.Runs)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for i, id := range ids {
		end, err := store.WaitEnd(wctx, id)
		if err != nil {
			cfg.Logf("impact: jetflow: run %s did not end: %v", id, err)
			continue
		}
		if end.Status != checkpoint.EndCompleted {
			continue
		}
		o := runOutcome{ok: true, took: end.At.Sub(created[i]), answered: 2}
		for _, node := range []string{"summarize", "classify"} {
			st, _, err := store.Node(ctx, id, node)
			if err != nil || st == nil {
				continue
			}
			var out struct {
				Usage struct {
					In  int64 `json:"input_tokens"`
					Out int64 `json:"output_tokens"`
				} `json:"usage"`
				Cost   float64 `json:"cost_usd"`
				Cached bool    `json:"cached"`
			}
			if json.Unmarshal(st.Output, &out) == nil {
				o.tokens += out.Usage.In + out.Usage.Out
				o.usd += out.Cost
			}
		}
		outs[i] = o
	}
	return outs, nil
}

// waitWorkers waits until n workers have their presence in the workers bucket.
func waitWorkers(ctx context.Context, js jetstream.JetStream, names workflow.Names, n int) error {
	kv, err := js.KeyValue(ctx, names.WorkersBucket())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		keys, err := kv.ListKeys(ctx)
		if err == nil {
			got := 0
			for range keys.Keys() {
				got++
			}
			if got >= n {
				return nil
			}
		}
		if !sleepUntil(ctx, time.Now().Add(200*time.Millisecond)) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("the %d worker processes did not come up within a minute", n)
}

// SVG draws the jetflow mode's calls per second per provider, with the outage shaded and
// the worker kill marked.
func (r *ImpactResult) SVG() string {
	var m *ImpactMode
	for _, x := range r.Modes {
		if x.Name == "jetflow" {
			m = x
		}
	}
	if m == nil {
		return ""
	}
	const w, h, pad = 900, 320, 40
	secs, peak := 1, 1
	for _, s := range m.Series {
		secs = max(secs, len(s))
		for _, v := range s {
			peak = max(peak, v)
		}
	}
	x := func(s float64) float64 { return pad + s*(w-2*pad)/float64(secs) }
	y := func(v int) float64 { return h - pad - float64(v)*(h-2*pad)/float64(peak) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	c := r.Config
	fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#fde2e2"/><text x="%.1f" y="%d">primary down</text>`+"\n",
		x(c.OutageAt.Seconds()), pad, x((c.OutageAt+c.OutageFor).Seconds())-x(c.OutageAt.Seconds()), h-2*pad, x(c.OutageAt.Seconds())+4, pad+14)
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#555" stroke-dasharray="4 3"/><text x="%.1f" y="%d">worker killed</text>`+"\n",
		x(c.KillAt.Seconds()), x(c.KillAt.Seconds()), pad, h-pad, x(c.KillAt.Seconds())+4, pad+28)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n",
		pad, w-pad, h-pad, h-pad, pad, pad, pad, h-pad)
	fmt.Fprintf(&b, `<text x="%d" y="%d">calls/s (peak %d)</text><text x="%d" y="%d">seconds (0–%d)</text>`+"\n", pad, pad-8, peak, w-pad-90, h-pad+28, secs)
	colors := map[string]string{"primary ok": "#2a9d3a", "primary failed": "#d62828", "secondary ok": "#1f6feb", "secondary failed": "#f4a261"}
	keys := make([]string, 0, len(m.Series))
	for k := range m.Series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		var pts []string
		for s, v := range m.Series[k] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(s)+0.5), y(v)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colors[k], strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", w-pad-150, pad+8+i*16, colors[k], w-pad-135, pad+17+i*16, k)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// Table is the result as the README prints it.
func (r *ImpactResult) Table() string {
	var b strings.Builder
	b.WriteString("| | " + strings.Join(names(r.Modes), " | ") + " |\n|---|" + strings.Repeat("---|", len(r.Modes)) + "\n")
	row := func(label string, f func(*ImpactMode) string) {
		cells := make([]string, len(r.Modes))
		for i, m := range r.Modes {
			cells[i] = f(m)
		}
		b.WriteString("| " + label + " | " + strings.Join(cells, " | ") + " |\n")
	}
	row("runs failed", func(m *ImpactMode) string { return fmt.Sprintf("%.1f %% (%d of %d)", m.FailedPct, m.Failed, m.Runs) })
	row("calls made", func(m *ImpactMode) string { return fmt.Sprint(m.Calls) })
	row("calls wasted (failed, or answers no completed run used)", func(m *ImpactMode) string { return fmt.Sprint(m.Wasted) })
	row("answers (paid calls) wasted", func(m *ImpactMode) string { return fmt.Sprint(m.AnswersWasted) })
	row("tokens wasted", func(m *ImpactMode) string { return fmt.Sprint(m.TokensWasted) })
	row("USD wasted", func(m *ImpactMode) string { return fmt.Sprintf("$%.4f", m.USDWasted) })
	row("outage end → answers/s back to 90 %", func(m *ImpactMode) string {
		if m.RecoverySeconds < 0 {
			return "not within the run"
		}
		return fmt.Sprintf("%.0f s", m.RecoverySeconds)
	})
	row("outage end → primary answering again", func(m *ImpactMode) string {
		if m.PrimaryBackSeconds < 0 {
			return "never"
		}
		return fmt.Sprintf("%.1f s", m.PrimaryBackSeconds)
	})
	row("p95 run duration (completed runs)", func(m *ImpactMode) string { return fmt.Sprintf("%.2f s", m.P95.Seconds()) })
	return b.String()
}

func names(ms []*ImpactMode) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}
