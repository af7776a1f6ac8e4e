// Package llmstub is a local model provider for tests and benchmarks: a real HTTP server
// that speaks the OpenAI-compatible chat completions API (POST /chat/completions), whose
// answers, failures and delays the caller scripts.
package llmstub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is what one call asked for.
type Request struct {
	// N numbers the calls the server received, from 1.
	N int64
	// Model, Messages, MaxTokens and Temperature are the request's fields.
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	MaxTokens   int64     `json:"max_tokens"`
	Temperature *float64  `json:"temperature"`
	// ResponseFormat is the requested format, when any.
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	// Authorization is the request's Authorization header.
	Authorization string `json:"-"`
	// At is when it arrived.
	At time.Time `json:"-"`
	// Status is the reply's HTTP status, and PromptTokens and CompletionTokens the usage
	// it reported (0 for an error).
	Status                         int   `json:"-"`
	PromptTokens, CompletionTokens int64 `json:"-"`
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Reply is how the server answers one call. The zero Reply is a success whose content
// echoes the last message.
type Reply struct {
	// Status is the HTTP status (default 200).
	Status int
	// RetryAfter is sent as the Retry-After header when set.
	RetryAfter string
	// Raw, when set, is sent as the body as is (malformed JSON, for one).
	Raw string
	// Content is the answer (default "echo: <last message>").
	Content string
	// Message is the error message of a non-200 reply.
	Message string
	// Delay holds the reply back (a slow or hung provider).
	Delay time.Duration
	// PromptTokens and CompletionTokens are the usage (default: a token per four
	// characters of the prompt, and of the answer).
	PromptTokens, CompletionTokens int64
}

// Server is a running stub.
type Server struct {
	*httptest.Server
	// Script decides each reply (nil: every call succeeds).
	script atomic.Pointer[func(*Request) Reply]

	n     atomic.Int64
	mu    sync.Mutex
	calls []Request
}

// Start starts a stub on 127.0.0.1 with script deciding its replies (nil: success).
func Start(script func(*Request) Reply) *Server {
	s := &Server{}
	s.SetScript(script)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// SetScript replaces the script.
func (s *Server) SetScript(script func(*Request) Reply) {
	if script == nil {
		script = func(*Request) Reply { return Reply{} }
	}
	s.script.Store(&script)
}

// BaseURL is the base_url a providers file gives for this stub.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Calls returns the calls received so far.
func (s *Server) Calls() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.calls...)
}

// Count returns how many calls the server received.
func (s *Server) Count() int64 { return s.n.Load() }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "the body is not JSON: "+err.Error())
		return
	}
	req.N = s.n.Add(1)
	req.Authorization = r.Header.Get("Authorization")
	req.At = time.Now()
	rep := (*s.script.Load())(&req)
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	content := rep.Content
	if content == "" && len(req.Messages) > 0 {
		content = "echo: " + req.Messages[len(req.Messages)-1].Content
	}
	pt, ct := rep.PromptTokens, rep.CompletionTokens
	if pt == 0 {
		for _, m := range req.Messages {
			pt += int64(len(m.Content))/4 + 4
		}
	}
	if ct == 0 {
		ct = int64(len(content))/4 + 1
	}
	req.Status = status
	if status == http.StatusOK && rep.Raw == "" {
		req.PromptTokens, req.CompletionTokens = pt, ct
	}
	s.mu.Lock()
	s.calls = append(s.calls, req)
	s.mu.Unlock()
	if rep.Delay > 0 {
		select {
		case <-time.After(rep.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	if rep.Raw != "" {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(rep.Raw))
		return
	}
	if status != http.StatusOK {
		writeErr(w, status, rep.Message)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", req.N), "object": "chat.completion", "created": time.Now().Unix(),
		"model": req.Model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": content}}},
		"usage": map[string]any{"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
	})
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	if msg == "" {
		msg = http.StatusText(status)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "stub_error", "code": nil}})
}
