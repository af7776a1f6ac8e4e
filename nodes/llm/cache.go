package llm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/nodes"
)

// cacheKey is the SHA-256 of what decides an answer: the provider's endpoint and model, the
// messages and the settings. It never holds the API key.
func cacheKey(p *Provider, r *request) string {
	b, _ := json.Marshal(struct {
		Kind        string    `json:"kind"`
		BaseURL     string    `json:"base_url"`
		Model       string    `json:"model"`
		Messages    []message `json:"messages"`
		MaxTokens   int64     `json:"max_tokens"`
		Temperature *float64  `json:"temperature,omitempty"`
		JSON        bool      `json:"json"`
	}{p.Kind, p.BaseURL, p.Models[r.alias], r.messages, r.maxTokens, r.temperature, r.json})
	sum := sha256.Sum256(b)
	return "llm." + hex.EncodeToString(sum[:])
}

// cached returns a cached answer from any provider of the chain, in order; nil on a miss.
func (n *Node) cached(ctx context.Context, chain []*Provider, r *request) *Output {
	for _, p := range chain {
		e, err := n.cfg.Cache.Get(ctx, cacheKey(p, r))
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				n.cfg.Logger.Warn("llm: cache read failed; calling the model", "err", err)
				return nil
			}
			continue
		}
		var out Output
		if json.Unmarshal(e.Value(), &out) != nil {
			continue
		}
		out.Cached, out.CostUSD, out.Fallbacks = true, 0, nil
		if n.cfg.Observer != nil {
			n.cfg.Observer.LLMCall(p.Name, out.Model, OutcomeCached, 0, 0, 0)
		}
		return &out
	}
	return nil
}

// store keeps an answer in the cache for CacheTTL; a failure only costs a later call.
func (n *Node) store(ctx context.Context, p *Provider, r *request, out *Output) {
	keep := *out
	keep.Fallbacks = nil
	b, err := json.Marshal(&keep)
	if err != nil {
		return
	}
	_, err = n.cfg.Cache.Create(context.WithoutCancel(ctx), cacheKey(p, r), b, jetstream.KeyTTL(n.cfg.CacheTTL))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		n.cfg.Logger.Warn("llm: cache write failed", "err", err)
	}
}

// retryAfter reads a 429's wait: Retry-After-Ms, then Retry-After (seconds or a date).
func retryAfter(h http.Header) (time.Duration, bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		return nodes.ParseRetryAfter(v, time.Now())
	}
	return 0, false
}

func jitter() float64 { return rand.Float64() }

// aliases lists a provider's model aliases, sorted.
func aliases(p *Provider) []string {
	out := make([]string, 0, len(p.Models))
	for a := range p.Models {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}
