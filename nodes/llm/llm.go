// Package llm is jetflow's llm node type: a call to a chat model through an ordered chain of
// providers (the OpenAI-compatible chat completions API, which OpenAI, vLLM, Ollama, LiteLLM
// and most hosts serve), each behind its own circuit breaker and cluster-wide rate limits
// (requests and tokens), with every call's cost recorded on its run, a per-run budget, and a
// result cache shared by every worker. jetflow owns the retries: the client's own are off.
package llm

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Type is the node type's name.
const Type = "llm"

// Defaults of a node's settings.
const (
	// DefaultMaxTokens is with.max_tokens when unset.
	DefaultMaxTokens = 1024
	// DefaultMaxWait is with.max_wait: the longest Retry-After or rate-limit wait a provider
	// is waited for before the next one is tried.
	DefaultMaxWait = 10 * time.Second
	// DefaultProviderAttempts is with.provider_attempts: calls to one provider that fail
	// with a retryable error before the next one is tried.
	DefaultProviderAttempts = 2
	// DefaultTimeout bounds one call when the provider names no timeout.
	DefaultTimeout = 60 * time.Second
	// DefaultCacheTTL is how long a cached answer is kept.
	DefaultCacheTTL = 24 * time.Hour
)

// Outcomes of a call, the outcome label of jetflow_llm_calls_total.
const (
	OutcomeOK       = "ok"
	OutcomeError    = "error"
	OutcomeFallback = "fallback"
	OutcomeCached   = "cached"
)

// Observer receives what the node's calls did, for metrics. metrics.Metrics implements it.
type Observer interface {
	// LLMCall is called once per call made or answered from the cache: outcome is one of
	// the Outcome constants; tokens and cost are zero for an error.
	LLMCall(provider, model, outcome string, inputTokens, outputTokens int64, usd float64)
	// LLMWasted is called with the cost of an answer that was lost (the worker died before
	// the node's checkpoint) when the node runs again.
	LLMWasted(usd float64)
}

// Config configures the llm node type of one worker.
type Config struct {
	// Providers are the providers nodes may call.
	Providers *File
	// Worker is the worker the node runs in: its breakers, rate limits and store.
	Worker *consumer.Worker
	// Cache is the cache bucket (nil: with.cache is ignored).
	Cache jetstream.KeyValue
	// CacheTTL is how long a cached answer lives (default DefaultCacheTTL).
	CacheTTL time.Duration
	// Observer receives metrics (optional).
	Observer Observer
	// Logger receives fallbacks and cache errors (default: discard).
	Logger *slog.Logger
	// HTTPClient sends the calls (default: a client of its own).
	HTTPClient *http.Client
}

// Node runs llm steps.
type Node struct {
	cfg     Config
	clients map[string]*openai.ChatCompletionService
}

// New returns the llm node type for cfg.
func New(cfg Config) (*Node, error) {
	if cfg.Providers == nil || len(cfg.Providers.Providers) == 0 {
		return nil, errors.New("llm: no providers")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	n := &Node{cfg: cfg, clients: map[string]*openai.ChatCompletionService{}}
	for _, p := range cfg.Providers.Providers {
		opts := []option.RequestOption{
			option.WithBaseURL(p.BaseURL),
			option.WithHTTPClient(cfg.HTTPClient),
			option.WithMaxRetries(0), // jetflow retries, trips breakers and falls back
		}
		if p.apiKey != "" {
			opts = append(opts, option.WithAPIKey(p.apiKey))
		}
		// The service, not openai.NewClient: the client would read OPENAI_API_KEY and
		// friends from the environment and send them to whatever base_url says.
		c := openai.NewChatCompletionService(opts...)
		n.clients[p.Name] = &c
	}
	return n, nil
}

// Register adds the llm node type to w.
func Register(w *consumer.Worker, cfg Config) error {
	cfg.Worker = w
	n, err := New(cfg)
	if err != nil {
		return err
	}
	w.Handle(Type, n.Handle)
	return nil
}

// Output is an llm node's output.
type Output struct {
	// Content is the model's answer.
	Content string `json:"content"`
	// Parsed is Content decoded, when the node asked for JSON.
	Parsed json.RawMessage `json:"parsed,omitempty"`
	// Model is the provider's name of the model that answered.
	Model string `json:"model"`
	// Provider names the provider that answered.
	Provider string `json:"provider"`
	// Usage is the call's token count.
	Usage Usage `json:"usage"`
	// CostUSD is what the call cost (0 from the cache).
	CostUSD float64 `json:"cost_usd"`
	// Cached says the answer came from the cache.
	Cached bool `json:"cached"`
	// Fallbacks lists the providers passed over before the one that answered, and why.
	Fallbacks []Fallback `json:"fallbacks,omitempty"`
}

// Usage is a call's token count.
type Usage struct {
	// InputTokens counts the prompt.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens counts the answer.
	OutputTokens int64 `json:"output_tokens"`
}

// Fallback is a provider passed over.
type Fallback struct {
	// Provider names it.
	Provider string `json:"provider"`
	// Reason says why, on one line.
	Reason string `json:"reason"`
}

// request is a node's settings, checked.
type request struct {
	alias       string
	messages    []message
	maxTokens   int64
	temperature *float64
	json        bool
	cache       bool
	providers   []string
	maxWait     time.Duration
	attempts    int
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// parse reads the step's settings; every problem is permanent.
func parse(with map[string]any) (*request, error) {
	r := &request{maxTokens: DefaultMaxTokens, maxWait: DefaultMaxWait, attempts: DefaultProviderAttempts}
	r.alias, _ = with["model"].(string)
	if strings.TrimSpace(r.alias) == "" {
		return nil, errors.New("llm: with.model must name a model alias from the providers file")
	}
	ms, ok := with["messages"].([]any)
	if !ok || len(ms) == 0 {
		return nil, errors.New("llm: with.messages must be a non-empty list of {role, content}")
	}
	for i, m := range ms {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("llm: message %d must be {role, content}", i)
		}
		role, _ := mm["role"].(string)
		var content string
		switch c := mm["content"].(type) {
		case string:
			content = c
		case nil:
			return nil, fmt.Errorf("llm: message %d has no content", i)
		default: // an expression gave an object or a number: send it as JSON
			b, err := json.Marshal(c)
			if err != nil {
				return nil, fmt.Errorf("llm: message %d: content: %w", i, err)
			}
			content = string(b)
		}
		switch role {
		case "system", "developer", "user", "assistant":
		default:
			return nil, fmt.Errorf("llm: message %d: role %q: use system, developer, user or assistant", i, role)
		}
		r.messages = append(r.messages, message{Role: role, Content: content})
	}
	if v, ok := with["max_tokens"]; ok {
		f, isNum := workflow.Number(v)
		if !isNum || f < 1 || f != float64(int64(f)) {
			return nil, fmt.Errorf("llm: with.max_tokens %v: use a whole number from 1", v)
		}
		r.maxTokens = int64(f)
	}
	if v, ok := with["temperature"]; ok {
		f, isNum := workflow.Number(v)
		if !isNum || !(f >= 0 && f <= 2) {
			return nil, fmt.Errorf("llm: with.temperature %v: use 0 to 2", v)
		}
		r.temperature = &f
	}
	r.json, _ = with["json"].(bool)
	r.cache, _ = with["cache"].(bool)
	if v, ok := with["providers"].([]any); ok {
		for _, p := range v {
			s, _ := p.(string)
			r.providers = append(r.providers, s)
		}
	}
	if v, ok := with["max_wait"].(string); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("llm: with.max_wait %q: use a duration such as \"10s\"", v)
		}
		r.maxWait = d
	}
	if v, ok := with["provider_attempts"]; ok {
		f, isNum := workflow.Number(v)
		if !isNum || f < 1 || f > 10 || f != float64(int64(f)) {
			return nil, fmt.Errorf("llm: with.provider_attempts %v: use 1 to 10", v)
		}
		r.attempts = int(f)
	}
	return r, nil
}

// chain returns the providers the request may use, in order.
func (n *Node) chain(r *request) ([]*Provider, error) {
	var out []*Provider
	if len(r.providers) > 0 {
		for _, name := range r.providers {
			p := n.cfg.Providers.Provider(name)
			if p == nil {
				return nil, fmt.Errorf("llm: with.providers names %q, which the providers file does not list", name)
			}
			if _, ok := p.Models[r.alias]; !ok {
				return nil, fmt.Errorf("llm: provider %s has no model %q (its models: %s)", name, r.alias, strings.Join(aliases(p), ", "))
			}
			out = append(out, p)
		}
		return out, nil
	}
	for _, p := range n.cfg.Providers.Providers {
		if _, ok := p.Models[r.alias]; ok {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("llm: no provider in the providers file has the model alias %q", r.alias)
	}
	return out, nil
}

// estimateTokens guesses a prompt's token count before the call (about four characters a
// token, plus a few a message): the rate limit reserves it, and the reply's usage corrects it.
func estimateTokens(ms []message) int64 {
	var n int64
	for _, m := range ms {
		n += int64(len(m.Content))/4 + 4
	}
	return n
}

// spendKey is the node's (or item's) key in the run's spend.
func spendKey(s *consumer.Step) string {
	if s.Index >= 0 {
		return fmt.Sprintf("%s[%d]", s.Node, s.Index)
	}
	return s.Node
}

// Handle runs one llm step.
func (n *Node) Handle(ctx context.Context, s *consumer.Step) (any, error) {
	r, err := parse(s.With)
	if err != nil {
		return nil, consumer.Permanent(err)
	}
	chain, err := n.chain(r)
	if err != nil {
		return nil, consumer.Permanent(err)
	}
	if r.cache && n.cfg.Cache != nil {
		if out := n.cached(ctx, chain, r); out != nil {
			return out, nil
		}
	}
	c := &call{n: n, s: s, r: r, est: estimateTokens(r.messages)}
	for i, p := range chain {
		out, next, err := c.provider(ctx, p, i == len(chain)-1)
		if err != nil || out != nil {
			if out != nil && r.cache && n.cfg.Cache != nil {
				n.store(ctx, p, r, out)
			}
			return out, err
		}
		c.fallbacks = append(c.fallbacks, Fallback{Provider: p.Name, Reason: next})
		n.cfg.Logger.Info("llm: next provider", "run", s.RunID, "node", s.Node, "passed", p.Name, "why", next)
	}
	return nil, errors.New("llm: no provider left") // not reached: the last provider decides
}

// call is one step's way through its providers.
type call struct {
	n         *Node
	s         *consumer.Step
	r         *request
	est       int64
	fallbacks []Fallback
	earliest  time.Time // the soonest a passed-over provider opens again
}

// provider tries one provider. It returns the output, or a reason to go on to the next
// provider, or the step's error (always on the last provider, which has no next).
func (c *call) provider(ctx context.Context, p *Provider, last bool) (*Output, string, error) {
	var lastErr error
	for attempt := 1; attempt <= c.r.attempts; attempt++ {
		if attempt > 1 {
			if !sleep(ctx, backoff(attempt)) {
				return nil, "", ctx.Err()
			}
		}
		out, verdict, wait, err := c.once(ctx, p)
		switch verdict {
		case verdictOK:
			return out, "", nil
		case verdictPermanent:
			return nil, "", consumer.Permanent(err)
		case verdictBudget:
			return nil, "", consumer.PermanentWithReason("budget exceeded", err)
		case verdictNext: // 401, 403, 404: this provider cannot answer
			if last {
				return nil, "", consumer.Permanent(err)
			}
			return nil, oneLine(err.Error()), nil
		case verdictOpen: // breaker open or rate limit: nothing was spent
			if until := time.Now().Add(wait); c.earliest.IsZero() || until.Before(c.earliest) {
				c.earliest = until
			}
			if !last {
				return nil, oneLine(err.Error()), nil
			}
			// Every provider is closed for now: wait without spending an attempt.
			return nil, "", consumer.Park(c.earliest)
		case verdictWait: // a 429 whose Retry-After the node waits out
			lastErr = err
			if wait > c.r.maxWait {
				if !last {
					return nil, oneLine(err.Error()), nil
				}
				return nil, "", consumer.RetryAfter(wait, err)
			}
			if !sleep(ctx, wait) {
				return nil, "", ctx.Err()
			}
		case verdictRetry:
			lastErr = err
			if ctx.Err() != nil {
				return nil, "", err
			}
		}
	}
	if !last {
		return nil, fmt.Sprintf("%d calls failed, the last: %s", c.r.attempts, oneLine(lastErr.Error())), nil
	}
	return nil, "", lastErr
}

// verdict is what one call's outcome means for the chain.
type verdict int

const (
	verdictOK verdict = iota
	verdictRetry
	verdictWait
	verdictNext
	verdictOpen
	verdictPermanent
	verdictBudget
)

// once makes one call to p, behind its breaker, rate limits and the run's budget.
func (c *call) once(ctx context.Context, p *Provider) (*Output, verdict, time.Duration, error) {
	n, s, r := c.n, c.s, c.r
	model := p.Models[r.alias]
	bs := breakerSettings(p)
	var ticket *breaker.Ticket
	set := n.cfg.Worker.Breakers()
	if set != nil {
		t, wait, err := set.Allow(ctx, bs)
		if err != nil {
			return nil, verdictRetry, 0, fmt.Errorf("llm: provider %s: breaker: %w", p.Name, err)
		}
		if t == nil && wait > 0 {
			return nil, verdictOpen, wait, fmt.Errorf("provider %s: breaker %s is open", p.Name, bs.Key)
		}
		ticket = t
	}
	done := func(err error) {
		if ticket != nil {
			ticket.Done(context.WithoutCancel(ctx), err)
		}
	}
	tokens := r.maxTokens + c.est
	var held *breaker.Tokens
	if lim := n.cfg.Worker.Limits(); lim != nil {
		var wait time.Duration
		if p.Rate.RequestsPerMinute > 0 {
			d, giveBack := lim.Reserve(p.Key(), Type, p.Rate.RequestsPerMinute/60, max(1, int(p.Rate.RequestsPerMinute/60)))
			if d > r.maxWait {
				giveBack()
				done(breaker.ErrExcluded)
				return nil, verdictOpen, d, fmt.Errorf("provider %s: requests_per_minute is used up for %s", p.Name, d.Round(time.Millisecond))
			}
			wait = d
		}
		if p.Rate.TokensPerMinute > 0 {
			d, t := lim.ReserveTokens(p.Key()+":tokens", Type, p.Rate.TokensPerMinute, int(tokens))
			if d > r.maxWait {
				t.Cancel()
				done(breaker.ErrExcluded)
				return nil, verdictOpen, d, fmt.Errorf("provider %s: tokens_per_minute is used up for %s", p.Name, d.Round(time.Millisecond))
			}
			held, wait = t, max(wait, d)
		}
		if wait > 0 && !sleep(ctx, wait) {
			held.Cancel()
			done(breaker.ErrExcluded)
			return nil, verdictRetry, 0, ctx.Err()
		}
	}
	store := n.cfg.Worker.Store()
	key := spendKey(s)
	if store != nil {
		wasted, err := store.ReserveSpend(ctx, s.RunID, s.Workflow, key, p.Price.Cost(c.est, r.maxTokens), s.Budget)
		if err != nil {
			held.Cancel()
			done(breaker.ErrExcluded)
			if errors.Is(err, checkpoint.ErrBudgetExceeded) {
				return nil, verdictBudget, 0, err
			}
			return nil, verdictRetry, 0, fmt.Errorf("llm: recording the call: %w", err)
		}
		if wasted > 0 && n.cfg.Observer != nil {
			n.cfg.Observer.LLMWasted(wasted)
		}
	}
	release := func() {
		if store != nil {
			_ = store.ReleaseSpend(context.WithoutCancel(ctx), s.RunID, key)
		}
	}
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := n.clients[p.Name].New(cctx, params(r, model))
	if err == nil {
		err = checkReply(resp, r.json)
	}
	if err != nil {
		held.Cancel()
		release()
		v, wait, cerr := classifyErr(ctx, cctx, p, err)
		switch v {
		case verdictWait:
			done(breaker.ErrExcluded)
			if wait > 0 && set != nil {
				set.CoolDown(context.WithoutCancel(ctx), bs, wait)
			}
		case verdictPermanent:
			done(breaker.ErrExcluded)
		default:
			done(cerr)
		}
		if n.cfg.Observer != nil {
			n.cfg.Observer.LLMCall(p.Name, model, OutcomeError, 0, 0, 0)
		}
		return nil, v, wait, cerr
	}
	done(nil)
	in, outTok := resp.Usage.PromptTokens, resp.Usage.CompletionTokens
	held.Settle(int(in + outTok))
	cost := p.Price.Cost(in, outTok)
	out := &Output{
		Content: resp.Choices[0].Message.Content, Model: cmp.Or(resp.Model, model), Provider: p.Name,
		Usage: Usage{InputTokens: in, OutputTokens: outTok}, CostUSD: cost, Fallbacks: c.fallbacks,
	}
	if r.json {
		out.Parsed = json.RawMessage(out.Content)
	}
	if store != nil {
		if err := store.SettleSpend(context.WithoutCancel(ctx), s.RunID, s.Workflow, checkpoint.Call{
			ID: key, Node: key, Provider: p.Name, USD: cost, InputTokens: in, OutputTokens: outTok}); err != nil {
			n.cfg.Logger.Warn("llm: cannot record the call's cost", "run", s.RunID, "node", s.Node, "err", err)
		}
	}
	if n.cfg.Observer != nil {
		outcome := OutcomeOK
		if len(c.fallbacks) > 0 {
			outcome = OutcomeFallback
		}
		n.cfg.Observer.LLMCall(p.Name, out.Model, outcome, in, outTok, cost)
	}
	return out, verdictOK, 0, nil
}

// params builds the chat completions request.
func params(r *request, model string) openai.ChatCompletionNewParams {
	msgs := make([]openai.ChatCompletionMessageParamUnion, 0, len(r.messages))
	for _, m := range r.messages {
		switch m.Role {
		case "system":
			msgs = append(msgs, openai.SystemMessage(m.Content))
		case "developer":
			msgs = append(msgs, openai.DeveloperMessage(m.Content))
		case "assistant":
			msgs = append(msgs, openai.AssistantMessage(m.Content))
		default:
			msgs = append(msgs, openai.UserMessage(m.Content))
		}
	}
	p := openai.ChatCompletionNewParams{Model: model, Messages: msgs, MaxTokens: openai.Int(r.maxTokens)}
	if r.temperature != nil {
		p.Temperature = openai.Float(*r.temperature)
	}
	if r.json {
		p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}
	}
	return p
}

// errMalformed marks a reply that is not a usable chat completion.
var errMalformed = errors.New("malformed reply")

// checkReply refuses a reply without an answer, or with an answer that is not the JSON the
// node asked for.
func checkReply(resp *openai.ChatCompletion, wantJSON bool) error {
	if resp == nil || len(resp.Choices) == 0 {
		return fmt.Errorf("%w: no choices", errMalformed)
	}
	if wantJSON && !json.Valid([]byte(resp.Choices[0].Message.Content)) {
		return fmt.Errorf("%w: the answer is not the JSON the node asked for", errMalformed)
	}
	return nil
}

// classifyErr says what a failed call means: a 429 is waited out (its Retry-After) or
// passed over; 5xx, 408, timeouts, network errors and malformed replies are retried; 401, 403
// and 404 (unknown model) send the step to the next provider; other 4xx are permanent. The
// error it returns names the provider and never holds its API key.
func classifyErr(ctx, cctx context.Context, p *Provider, err error) (verdict, time.Duration, error) {
	var ae *openai.Error
	switch {
	case ctx.Err() != nil:
		return verdictRetry, 0, ctx.Err()
	case errors.As(err, &ae):
		msg := fmt.Sprintf("provider %s: HTTP %d", p.Name, ae.StatusCode)
		if m := strings.TrimSpace(ae.Message); m != "" {
			msg += ": " + m
		}
		e := errors.New(p.redact(oneLine(msg)))
		switch code := ae.StatusCode; {
		case code == http.StatusTooManyRequests:
			var d time.Duration
			if ae.Response != nil {
				d, _ = retryAfter(ae.Response.Header)
			}
			return verdictWait, d, e
		case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound:
			return verdictNext, 0, e
		case code == http.StatusRequestTimeout || code >= 500:
			return verdictRetry, 0, e
		default:
			return verdictPermanent, 0, e
		}
	case cctx.Err() != nil:
		return verdictRetry, 0, fmt.Errorf("provider %s: no answer within %s", p.Name, timeoutOf(p))
	case errors.Is(err, errMalformed):
		return verdictRetry, 0, fmt.Errorf("provider %s: %s", p.Name, p.redact(err.Error()))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) || strings.Contains(err.Error(), "parsing response json") {
		return verdictRetry, 0, fmt.Errorf("provider %s: %w: the reply is not JSON (%s)", p.Name, errMalformed, p.redact(oneLine(err.Error())))
	}
	return verdictRetry, 0, fmt.Errorf("provider %s: %s", p.Name, p.redact(oneLine(err.Error())))
}

func timeoutOf(p *Provider) time.Duration {
	if d := p.Timeout.D(); d > 0 {
		return d
	}
	return DefaultTimeout
}

// redact blanks the provider's API key from s: some servers echo a refused key back.
func (p *Provider) redact(s string) string {
	if len(p.apiKey) < 4 {
		return s
	}
	return strings.ReplaceAll(s, p.apiKey, "[REDACTED]")
}

// breakerSettings are the provider's breaker.
func breakerSettings(p *Provider) breaker.Settings {
	bs := breaker.Settings{Key: p.Key()}
	if b := p.Breaker; b != nil {
		bs.ConsecutiveFailures = uint32(b.ConsecutiveFailures)
		bs.FailureRatio = b.FailureRatio
		bs.MinRequests = uint32(b.MinRequests)
		bs.OpenFor = b.OpenFor.D()
		bs.HalfOpenRequests = uint32(b.HalfOpenRequests)
	}
	return bs
}

// backoff is the wait before a provider's attempt-th call: 250 ms, doubling, with jitter.
func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt-2, 4)
	return d/2 + time.Duration(float64(d/2)*jitter())
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
