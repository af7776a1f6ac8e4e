package llm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/jetflow-dev/jetflow/workflow"
)

// KindOpenAI is the provider kind that speaks the OpenAI-compatible chat completions API.
const KindOpenAI = "openai"

// File is a providers file: the model providers llm nodes may call, in fallback order.
type File struct {
	// Providers lists the providers.
	Providers []*Provider `json:"providers"`
}

// Provider is one model provider.
type Provider struct {
	// Name names the provider in a node's with.providers, in metrics, and in its breaker
	// and rate keys (llm:<name>).
	Name string `json:"name"`
	// Kind is the wire protocol: "openai" (the default).
	Kind string `json:"kind,omitempty"`
	// BaseURL is the API's base, such as https://api.openai.com/v1 or
	// http://localhost:11434/v1 (Ollama).
	BaseURL string `json:"base_url"`
	// APIKeyEnv names the environment variable that holds the API key; empty sends none.
	APIKeyEnv string `json:"api_key_env,omitempty"`
	// Models maps the aliases nodes name (with.model) to this provider's model names.
	Models map[string]string `json:"models"`
	// Price is what a million tokens cost, in USD.
	Price Price `json:"price,omitempty"`
	// Rate limits the provider's calls cluster-wide.
	Rate Rate `json:"rate,omitempty"`
	// Breaker tunes the provider's circuit breaker (key llm:<name>).
	Breaker *workflow.Breaker `json:"breaker,omitempty"`
	// Timeout bounds one call (default 60s).
	Timeout workflow.Duration `json:"timeout,omitempty"`

	apiKey string // read from APIKeyEnv when the file is loaded
}

// Price is a provider's price in USD per million tokens.
type Price struct {
	// InputPerMTok is the price of a million prompt tokens.
	InputPerMTok float64 `json:"input_per_mtok,omitempty"`
	// OutputPerMTok is the price of a million completion tokens.
	OutputPerMTok float64 `json:"output_per_mtok,omitempty"`
}

// Cost returns what a call with this usage costs.
func (p Price) Cost(inputTokens, outputTokens int64) float64 {
	return (float64(inputTokens)*p.InputPerMTok + float64(outputTokens)*p.OutputPerMTok) / 1e6
}

// Rate is a provider's limits across the cluster; zero fields are unlimited.
type Rate struct {
	// RequestsPerMinute caps calls.
	RequestsPerMinute float64 `json:"requests_per_minute,omitempty"`
	// TokensPerMinute caps tokens: each call reserves max_tokens plus an estimate of its
	// prompt, corrected by the reply's usage.
	TokensPerMinute float64 `json:"tokens_per_minute,omitempty"`
}

// Key is the provider's breaker and rate key.
func (p *Provider) Key() string { return "llm:" + p.Name }

// LoadFile reads and checks a providers file, and reads each provider's API key from its
// environment variable (getenv; os.Getenv when nil).
func LoadFile(path string, getenv func(string) string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("providers file: %w", err)
	}
	return ParseFile(path, data, getenv)
}

// ParseFile parses and checks a providers file's contents.
func ParseFile(name string, data []byte, getenv func(string) string) (*File, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var f File
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.DisallowUnknownField(), yaml.UseJSONUnmarshaler(), yaml.Strict()); err != nil {
		var ye yaml.Error
		msg := err.Error()
		if errors.As(err, &ye) {
			msg = ye.GetMessage()
			if tk := ye.GetToken(); tk != nil && tk.Position != nil {
				return nil, fmt.Errorf("%s:%d:%d: %s", name, tk.Position.Line, tk.Position.Column, oneLine(msg))
			}
		}
		return nil, fmt.Errorf("%s: %s", name, oneLine(msg))
	}
	if err := f.check(getenv); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &f, nil
}

func (f *File) check(getenv func(string) string) error {
	if len(f.Providers) == 0 {
		return errors.New("no providers: list them under `providers`")
	}
	var seen []string
	for i, p := range f.Providers {
		at := fmt.Sprintf("providers[%d]", i)
		if p == nil {
			return fmt.Errorf("%s is empty", at)
		}
		switch {
		case p.Name == "":
			return fmt.Errorf("%s has no name", at)
		case !workflow.ValidName(p.Name):
			return fmt.Errorf("%s: name %q: use letters, digits, '_' and '-' only", at, p.Name)
		case slices.Contains(seen, p.Name):
			return fmt.Errorf("%s: provider %q is listed twice", at, p.Name)
		}
		seen = append(seen, p.Name)
		at = "provider " + p.Name
		if p.Kind == "" {
			p.Kind = KindOpenAI
		}
		if p.Kind != KindOpenAI {
			return fmt.Errorf("%s: kind %q is not supported (use %s)", at, p.Kind, KindOpenAI)
		}
		u, err := url.Parse(p.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s: base_url %q must be an http or https URL, such as https://api.openai.com/v1", at, p.BaseURL)
		}
		if u.User != nil {
			return fmt.Errorf("%s: base_url must not hold credentials: name the key's variable in api_key_env", at)
		}
		if len(p.Models) == 0 {
			return fmt.Errorf("%s: no models: map the aliases nodes use to this provider's model names", at)
		}
		for alias, m := range p.Models {
			if alias == "" || strings.TrimSpace(m) == "" {
				return fmt.Errorf("%s: models: alias %q maps to %q; both must be set", at, alias, m)
			}
		}
		if !(p.Price.InputPerMTok >= 0) || !(p.Price.OutputPerMTok >= 0) {
			return fmt.Errorf("%s: price must not be negative", at)
		}
		if !(p.Rate.RequestsPerMinute >= 0) || !(p.Rate.TokensPerMinute >= 0) {
			return fmt.Errorf("%s: rate must not be negative", at)
		}
		if p.Timeout < 0 {
			return fmt.Errorf("%s: timeout must be positive", at)
		}
		if b := p.Breaker; b != nil && (b.ConsecutiveFailures < 0 || b.OpenFor < 0 || b.HalfOpenRequests < 0 || b.MinRequests < 0 || !(b.FailureRatio >= 0 && b.FailureRatio <= 1)) {
			return fmt.Errorf("%s: breaker settings must not be negative (failure_ratio 0 to 1)", at)
		}
		if p.APIKeyEnv != "" {
			p.apiKey = getenv(p.APIKeyEnv)
			if p.apiKey == "" {
				return fmt.Errorf("%s: environment variable %s (api_key_env) is not set", at, p.APIKeyEnv)
			}
		}
	}
	return nil
}

// Provider returns the provider named name, or nil.
func (f *File) Provider(name string) *Provider {
	for _, p := range f.Providers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// oneLine keeps the first line of s, for an error.
func oneLine(s string) string {
	return workflow.OneLine(s, 300)
}
