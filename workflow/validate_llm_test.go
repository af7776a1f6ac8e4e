package workflow

import (
	"strings"
	"testing"
	"time"
)

func TestValidateLLM(t *testing.T) {
	t.Parallel()
	node := func(with string) string {
		return "name: w\nnodes:\n  - name: ask\n    type: llm\n    with: " + with + "\n"
	}
	ok := `{model: fast, messages: [{role: user, content: hi}]}`
	if _, err := Parse("w.yaml", []byte(node(ok)), ValidateOptions{}); err != nil {
		t.Fatalf("a plain llm node: %v", err)
	}
	for _, tc := range []struct{ with, want string }{
		{`{messages: [{role: user, content: hi}]}`, "needs with.model"},
		{`{model: fast}`, "needs with.messages"},
		{`{model: fast, messages: []}`, "with.messages is empty"},
		{`{model: fast, messages: [{role: robot, content: hi}]}`, `role "robot"`},
		{`{model: fast, messages: [{role: user}]}`, "message 0 has no content"},
		{`{model: fast, messages: [{role: user, content: hi, name: x}]}`, `unknown field "name"`},
		{`{model: fast, messages: [{role: user, content: hi}], max_tokens: 0}`, "max_tokens 0"},
		{`{model: fast, messages: [{role: user, content: hi}], temperature: 3}`, "temperature 3: use 0 to 2"},
		{`{model: fast, messages: [{role: user, content: hi}], json: "yes"}`, "json must be true or false"},
		{`{model: fast, messages: [{role: user, content: hi}], max_wait: soon}`, "max_wait soon"},
		{`{model: fast, messages: [{role: user, content: hi}], providers: []}`, "with.providers must be a list"},
		{`{model: fast, messages: [{role: user, content: hi}], prompt: hi}`, `unknown setting "prompt"`},
	} {
		_, err := Parse("w.yaml", []byte(node(tc.with)), ValidateOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: got %v, want an error holding %q", tc.with, err, tc.want)
		}
	}
	if _, err := Parse("w.yaml", []byte("name: w\nbudget: {usd: -1}\nnodes:\n  - name: a\n    type: noop\n"), ValidateOptions{}); err == nil || !strings.Contains(err.Error(), "budget.usd -1") {
		t.Errorf("a negative budget: %v", err)
	}
	w, err := Parse("w.yaml", []byte(node(`{model: fast, cache: true, temperature: 0.5, messages: [{role: user, content: hi}]}`)), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ws := w.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "cache is on with temperature 0.5") {
		t.Errorf("warnings %q: want one on cache with temperature", ws)
	}
	w, _ = Parse("w.yaml", []byte(node(`{model: fast, cache: true, temperature: 0, messages: [{role: user, content: hi}]}`)), ValidateOptions{})
	if ws := w.Warnings(); len(ws) != 0 {
		t.Errorf("warnings %q for temperature 0: want none", ws)
	}
}

func TestValidateWait(t *testing.T) {
	t.Parallel()
	node := func(with string) string {
		return "name: w\nnodes:\n  - name: approve\n    type: wait\n    with: " + with + "\n"
	}
	w, err := Parse("w.yaml", []byte(node(`{signal: approve, timeout: 48h, on_timeout: skip}`)), ValidateOptions{})
	if err != nil {
		t.Fatalf("a wait node: %v", err)
	}
	if sig, d, skip := w.Nodes[0].WaitSettings(); sig != "approve" || d != 48*time.Hour || !skip {
		t.Errorf("WaitSettings = %s, %s, %v", sig, d, skip)
	}
	w, _ = Parse("w.yaml", []byte(node(`{signal: approve}`)), ValidateOptions{})
	if _, d, skip := w.Nodes[0].WaitSettings(); d != DefaultWaitTimeout || skip {
		t.Errorf("defaults: %s, %v; want 24h and fail", d, skip)
	}
	for _, tc := range []struct{ with, want string }{
		{`{timeout: 1h}`, "needs with.signal"},
		{`{signal: "a.b"}`, `signal "a.b"`},
		{`{signal: ok, timeout: soon}`, "timeout soon"},
		{`{signal: ok, timeout: 9000h}`, "timeout 9000h"},
		{`{signal: ok, on_timeout: retry}`, "on_timeout retry: use fail or skip"},
		{`{signal: ok, data: x}`, `unknown setting "data"`},
	} {
		if _, err := Parse("w.yaml", []byte(node(tc.with)), ValidateOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: got %v, want an error holding %q", tc.with, err, tc.want)
		}
	}
}

func TestValidateService(t *testing.T) {
	t.Parallel()
	node := func(with string) string {
		return "name: w\nnodes:\n  - name: call\n    type: service\n    with: " + with + "\n"
	}
	for _, ok := range []string{`{subject: svc.summarize}`, `{subject: svc.summarize, timeout: 2m}`, `{subject: "svc.${{ input.kind }}"}`} {
		if _, err := Parse("w.yaml", []byte(node(ok)), ValidateOptions{}); err != nil {
			t.Errorf("with %s: %v", ok, err)
		}
	}
	for _, tc := range []struct{ with, want string }{
		{`{timeout: 1m}`, "needs with.subject"},
		{`{subject: "svc.*"}`, "no wildcards"},
		{`{subject: "svc..x"}`, "a NATS subject"},
		{`{subject: svc.x, timeout: soon}`, "timeout soon"},
		{`{subject: svc.x, url: y}`, `unknown setting "url"`},
	} {
		if _, err := Parse("w.yaml", []byte(node(tc.with)), ValidateOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: got %v, want an error holding %q", tc.with, err, tc.want)
		}
	}
}
