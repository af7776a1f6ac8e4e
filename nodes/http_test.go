package nodes_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
)

// httpOutput is the http node's output, decoded from its JSON.
type httpOutput struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// newServer starts a test server that the test closes when it ends.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// runHTTP calls nodes.HTTP with a context tied to the test.
func runHTTP(t *testing.T, with map[string]any) (any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), execLimit)
	defer cancel()
	s := newStep(with, "")
	s.Type = "http"
	return nodes.HTTP(ctx, s)
}

// mustHTTP runs HTTP, fails the test on error and returns the decoded output, after checking
// the Go types the output holds.
func mustHTTP(t *testing.T, with map[string]any) httpOutput {
	t.Helper()
	out, err := runHTTP(t, with)
	if err != nil {
		t.Fatalf("HTTP(%v): %v", with["url"], err)
	}
	m, ok := out.(map[string]any)
	if !ok {
		t.Fatalf("output is %T, want map[string]any", out)
	}
	if _, ok := m["status"].(int); !ok {
		t.Errorf("output status is %T, want int", m["status"])
	}
	if _, ok := m["headers"].(map[string]string); !ok {
		t.Errorf("output headers is %T, want map[string]string", m["headers"])
	}
	switch m["body"].(type) {
	case string, json.RawMessage:
	default:
		t.Errorf("output body is %T, want string or json.RawMessage", m["body"])
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatalf("output does not marshal: %v", err)
	}
	var o httpOutput
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("output %s does not decode: %v", b, err)
	}
	return o
}

// requireRetryAfter fails unless err is a *consumer.RetryAfterError, and returns its wait.
func requireRetryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	var ra *consumer.RetryAfterError
	if !errors.As(err, &ra) {
		t.Fatalf("err %v (%T) is not a *consumer.RetryAfterError", err, err)
	}
	if isPermanent(err) {
		t.Fatalf("err %q is both retry-after and permanent", err)
	}
	return ra.After
}

const errorBody = "{\"error\":\n  \"bad key\"}\n"

// statusHandler answers with code, the given headers and errorBody as JSON.
func statusHandler(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Add(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, errorBody)
	}
}

func TestHTTPSuccess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		with     map[string]any // url is added
		status   int
		body     string // the body as JSON text: a JSON string when the body is text
		header   string // a response header that must be in the output…
		headerIs string // …with this value
	}{
		{
			name: "200 JSON body is parsed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				_, _ = io.WriteString(w, "\n{\"ok\": true, \"id\": 12345678901234567890, \"tags\": [\"a\"]}\n")
			},
			status: 200, body: `{"ok":true,"id":12345678901234567890,"tags":["a"]}`,
			header: "Content-Type", headerIs: "application/json; charset=utf-8",
		},
		{
			name: "+json type is parsed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/problem+json")
				_, _ = io.WriteString(w, `[1,2]`)
			},
			status: 200, body: `[1,2]`,
		},
		{
			name: "JSON type that does not parse is a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{oops`)
			},
			status: 200, body: `"{oops"`,
		},
		{
			name: "200 text body is a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "hello\nworld\n")
			},
			status: 200, body: `"hello\nworld\n"`,
		},
		{
			name: "JSON text without a JSON type is a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, `{"a":1}`)
			},
			status: 200, body: `"{\"a\":1}"`,
		},
		{
			name:    "201 with expect_status [201]",
			handler: statusHandler(201),
			with:    map[string]any{"expect_status": []any{uint64(201)}},
			status:  201, body: `{"error":"bad key"}`,
		},
		{
			name:    "201 is a 2xx by default",
			handler: statusHandler(201),
			status:  201, body: `{"error":"bad key"}`,
		},
		{
			name:    "404 listed in expect_status is success",
			handler: statusHandler(404),
			with:    map[string]any{"expect_status": []any{float64(200), float64(404)}},
			status:  404, body: `{"error":"bad key"}`,
		},
		{
			name:    "500 as a single expected status",
			handler: statusHandler(500),
			with:    map[string]any{"expect_status": int64(500)},
			status:  500, body: `{"error":"bad key"}`,
		},
		{
			name:    "204 has an empty body",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
			status:  204, body: `""`,
		},
		{
			name: "HEAD has an empty body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"a":1}`)
			},
			with:   map[string]any{"method": "HEAD"},
			status: 200, body: `""`,
		},
		{
			name: "301 is followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/moved" {
					http.Redirect(w, r, "/moved", http.StatusMovedPermanently)
					return
				}
				_, _ = io.WriteString(w, "landed")
			},
			status: 200, body: `"landed"`,
		},
		{
			name: "a header's first value",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Add("X-Multi", "one")
				w.Header().Add("X-Multi", "two")
			},
			status: 200, body: `""`,
			header: "X-Multi", headerIs: "one",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			with := map[string]any{"url": srv.URL + "/x"}
			for k, v := range tt.with {
				with[k] = v
			}
			got := mustHTTP(t, with)
			if got.Status != tt.status {
				t.Errorf("status = %d, want %d", got.Status, tt.status)
			}
			if string(got.Body) != tt.body {
				t.Errorf("body = %s, want %s", got.Body, tt.body)
			}
			if tt.header != "" && got.Headers[tt.header] != tt.headerIs {
				t.Errorf("headers[%q] = %q, want %q (all: %v)", tt.header, got.Headers[tt.header], tt.headerIs, got.Headers)
			}
		})
	}
}

func TestHTTPErrorStatuses(t *testing.T) {
	t.Parallel()
	const (
		plain = iota
		permanent
		retryAfter
	)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		expect  any           // with.expect_status, if set
		kind    int           // plain (retryable), permanent or retryAfter
		after   time.Duration // the wait, for retryAfter
		msg     string        // what follows "http GET <url>: "
	}{
		{"400", statusHandler(400), nil, permanent, 0, `400 Bad Request: {"error": "bad key"}`},
		{"401", statusHandler(401), nil, permanent, 0, `401 Unauthorized: {"error": "bad key"}`},
		{"404", statusHandler(404), nil, permanent, 0, `404 Not Found: {"error": "bad key"}`},
		{"409", statusHandler(409), nil, permanent, 0, `409 Conflict: {"error": "bad key"}`},
		{"408", statusHandler(408), nil, plain, 0, `408 Request Timeout: {"error": "bad key"}`},
		{"500", statusHandler(500), nil, plain, 0, `500 Internal Server Error: {"error": "bad key"}`},
		{"502", statusHandler(502), nil, plain, 0, `502 Bad Gateway: {"error": "bad key"}`},
		{"503", statusHandler(503), nil, plain, 0, `503 Service Unavailable: {"error": "bad key"}`},
		{"599 unnamed", statusHandler(599), nil, plain, 0, `599: {"error": "bad key"}`},
		{"429 without Retry-After", statusHandler(429), nil, plain, 0, `429 Too Many Requests: {"error": "bad key"}`},
		{"429 with Retry-After: 7", statusHandler(429, "Retry-After", "7"), nil, retryAfter, 7 * time.Second, `429 Too Many Requests`},
		{"503 with Retry-After: 0", statusHandler(503, "Retry-After", "0"), nil, retryAfter, 0, `503 Service Unavailable`},
		{"429 with a huge Retry-After is clamped", statusHandler(429, "Retry-After", "86400"), nil, retryAfter, time.Hour, `429 Too Many Requests`},
		{"429 with a past date", statusHandler(429, "Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"), nil, retryAfter, 0, `429 Too Many Requests`},
		{"429 with an unparseable Retry-After", statusHandler(429, "Retry-After", "soon"), nil, plain, 0, `429 Too Many Requests`},
		{"500 ignores Retry-After", statusHandler(500, "Retry-After", "7"), nil, plain, 0, `500 Internal Server Error`},
		{"200 not in expect_status", statusHandler(200), []any{float64(201)}, permanent, 0, `200 OK: {"error": "bad key"}`},
		{"503 not in expect_status stays retryable", statusHandler(503), []any{float64(201)}, plain, 0, `503 Service Unavailable`},
		{
			"empty body",
			func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) },
			nil, permanent, 0, `403 Forbidden`,
		},
		{
			"a 3xx without Location is not followed",
			func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(304) },
			nil, permanent, 0, `304 Not Modified`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			with := map[string]any{"url": srv.URL + "/v1/x"}
			if tt.expect != nil {
				with["expect_status"] = tt.expect
			}
			out, err := runHTTP(t, with)
			if out != nil {
				t.Errorf("output = %v, want nil", out)
			}
			prefix := "http GET " + srv.URL + "/v1/x: "
			switch tt.kind {
			case plain:
				requireRetryable(t, err, prefix+tt.msg)
			case permanent:
				requirePermanent(t, err)
				if want := prefix + tt.msg; err.Error() != want {
					t.Errorf("err = %q\nwant  %q", err, want)
				}
			case retryAfter:
				if got := requireRetryAfter(t, err); got != tt.after {
					t.Errorf("retry after %v, want %v", got, tt.after)
				}
				requireContains(t, err, prefix+tt.msg)
			}
		})
	}
}

func TestHTTPRetryAfterDate(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	_, err := runHTTP(t, map[string]any{"url": srv.URL})
	// The date has whole seconds and the clocks are the same: the wait is just under 2m.
	if got := requireRetryAfter(t, err); got <= time.Minute || got > 2*time.Minute {
		t.Errorf("retry after %v, want about 2m", got)
	}
}

func TestHTTPErrorBodyIsOneLineAndTruncated(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("line\r\n\tmore  ", 200) + "END"
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, long+"\x00\x1b")
	})
	_, err := runHTTP(t, map[string]any{"url": srv.URL})
	requirePermanent(t, err, "400 Bad Request: line more line more")
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n\t\x00\x1b") {
		t.Errorf("err %q is not one line of printable text", msg)
	}
	_, body, _ := strings.Cut(msg, "400 Bad Request: ")
	if !strings.HasSuffix(body, "…") || len(body) > 512+len("…") {
		t.Errorf("body in the error is %d bytes (%q), want at most 512 and a trailing …", len(body), body)
	}
	if strings.Contains(msg, "END") {
		t.Errorf("err %q holds the end of a long body", msg)
	}
}

func TestHTTPErrorMessageExample(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"bad key"}`)
	})
	u, _ := url.Parse(srv.URL)
	u.User = url.UserPassword("me", "hunter22")
	u.Path = "/v1/x"
	u.RawQuery = "api_key=k-123456&page=2"
	u.Fragment = "frag"
	_, err := runHTTP(t, map[string]any{"url": u.String(), "method": "post", "body": map[string]any{}})
	requirePermanent(t, err)
	if want := "http POST " + srv.URL + `/v1/x: 401 Unauthorized: {"error":"bad key"}`; err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
}

// request is what a recording server saw.
type request struct {
	Method, Host, Query, Body string
	Header                    http.Header
	User, Password            string
}

// newRecorder starts a server that records each request it answers with 200.
func newRecorder(t *testing.T) (*httptest.Server, <-chan request) {
	t.Helper()
	got := make(chan request, 10)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		user, pass, _ := r.BasicAuth()
		got <- request{
			Method: r.Method, Host: r.Host, Query: r.URL.RawQuery, Body: string(b),
			Header: r.Header.Clone(), User: user, Password: pass,
		}
	})
	return srv, got
}

func TestHTTPRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		with   map[string]any // url is added unless set
		path   string         // appended to the server URL
		method string
		body   string
		header map[string]string // "" means the header must be absent
		check  func(t *testing.T, r request)
	}{
		{
			name: "defaults", method: "GET", body: "",
			header: map[string]string{"Idempotency-Key": "run-0001.charge", "User-Agent": "jetflow", "Content-Type": ""},
		},
		{
			name:   "JSON object body defaults to POST as application/json",
			with:   map[string]any{"body": map[string]any{"amount": uint64(5), "items": []any{"a", true}}},
			method: "POST", body: `{"amount":5,"items":["a",true]}`,
			header: map[string]string{"Content-Type": "application/json", "Idempotency-Key": "run-0001.charge"},
		},
		{
			name:   "JSON number body",
			with:   map[string]any{"method": "PUT", "body": float64(42)},
			method: "PUT", body: "42",
			header: map[string]string{"Content-Type": "application/json"},
		},
		{
			name:   "string body is sent as is",
			with:   map[string]any{"body": "a=1&b=2"},
			method: "POST", body: "a=1&b=2",
			header: map[string]string{"Content-Type": ""},
		},
		{
			name:   "a given Content-Type wins",
			with:   map[string]any{"body": []any{"x"}, "headers": map[string]any{"content-type": "application/vnd.api+json"}},
			method: "POST", body: `["x"]`,
			header: map[string]string{"Content-Type": "application/vnd.api+json"},
		},
		{
			name:   "method in lower case",
			with:   map[string]any{"method": "patch", "body": "{}"},
			method: "PATCH", body: "{}",
		},
		{
			name:   "GET with a body",
			with:   map[string]any{"method": "GET", "body": "q"},
			method: "GET", body: "q",
		},
		{
			name:   "DELETE without a body",
			with:   map[string]any{"method": "DELETE"},
			method: "DELETE", body: "",
		},
		{
			name:   "explicit null body sends none",
			with:   map[string]any{"body": nil},
			method: "GET", body: "",
		},
		{
			name: "headers, the user's Idempotency-Key and User-Agent",
			with: map[string]any{"headers": map[string]any{
				"X-Api-Key": "abc-123", "idempotency-key": "mine", "User-Agent": "bot/1", "X-Count": uint64(5), "X-On": true,
			}},
			method: "GET", body: "",
			header: map[string]string{"X-Api-Key": "abc-123", "Idempotency-Key": "mine", "User-Agent": "bot/1", "X-Count": "5", "X-On": "true"},
		},
		{
			name:   "headers as map[string]string",
			with:   map[string]any{"headers": map[string]string{"X-Trace": "t-1"}},
			method: "GET", body: "",
			header: map[string]string{"X-Trace": "t-1"},
		},
		{
			name: "Host header sets the host", method: "GET", body: "",
			with: map[string]any{"headers": map[string]any{"Host": "api.internal"}},
			check: func(t *testing.T, r request) {
				if r.Host != "api.internal" {
					t.Errorf("host = %q, want api.internal", r.Host)
				}
			},
		},
		{
			name: "query string and userinfo are sent", method: "GET", body: "",
			path: "/p?a=1&b=x%20y",
			check: func(t *testing.T, r request) {
				if r.Query != "a=1&b=x%20y" {
					t.Errorf("query = %q, want a=1&b=x%%20y", r.Query)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, got := newRecorder(t)
			with := map[string]any{"url": srv.URL + tt.path}
			for k, v := range tt.with {
				with[k] = v
			}
			if out := mustHTTP(t, with); out.Status != 200 {
				t.Fatalf("status = %d, want 200", out.Status)
			}
			r := <-got
			if r.Method != tt.method {
				t.Errorf("method = %q, want %q", r.Method, tt.method)
			}
			if r.Body != tt.body {
				t.Errorf("body = %q, want %q", r.Body, tt.body)
			}
			for name, want := range tt.header {
				if v := r.Header.Get(name); v != want {
					t.Errorf("header %s = %q, want %q", name, v, want)
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestHTTPBasicAuthFromURL(t *testing.T) {
	t.Parallel()
	srv, got := newRecorder(t)
	u, _ := url.Parse(srv.URL)
	u.User = url.UserPassword("me", "p@ss word")
	mustHTTP(t, map[string]any{"url": u.String()})
	if r := <-got; r.User != "me" || r.Password != "p@ss word" {
		t.Errorf("basic auth = %q, %q; want me, p@ss word", r.User, r.Password)
	}
}

func TestHTTPIdempotencyKeyIsTheStepKey(t *testing.T) {
	t.Parallel()
	srv, got := newRecorder(t)
	for _, key := range []string{"run-a.charge", "run-b.refund"} {
		s := newStep(map[string]any{"url": srv.URL}, "")
		s.IdempotencyKey = key
		if _, err := nodes.HTTP(t.Context(), s); err != nil {
			t.Fatalf("HTTP: %v", err)
		}
		if r := <-got; r.Header.Get("Idempotency-Key") != key || len(r.Header.Values("Idempotency-Key")) != 1 {
			t.Errorf("Idempotency-Key = %q, want exactly %q", r.Header.Values("Idempotency-Key"), key)
		}
	}
}

func TestHTTPBadWith(t *testing.T) {
	t.Parallel()
	const u = "https://api.example.com/v1"
	tests := []struct {
		name string
		with map[string]any
		want string
	}{
		{"nil with", nil, "with.url is missing"},
		{"no url", map[string]any{"method": "GET"}, "with.url is missing"},
		{"url not a string", map[string]any{"url": float64(3)}, "with.url must be a string, not a number"},
		{"ftp scheme", map[string]any{"url": "ftp://files.example.com/a"}, `with.url "ftp://files.example.com/a" must start with http:// or https://`},
		{"no scheme", map[string]any{"url": "api.example.com/v1"}, "must start with http:// or https://"},
		{"no host", map[string]any{"url": "http:///path"}, `with.url "http:///path" has no host`},
		{"opaque", map[string]any{"url": "http:api.example.com"}, "has no host"},
		{"unparseable", map[string]any{"url": "http://a b.example.com/"}, `with.url "http://a b.example.com/" is not a valid URL`},
		{"bad escape", map[string]any{"url": "http://example.com/%zz"}, "is not a valid URL"},
		{"unknown method", map[string]any{"url": u, "method": "FETCH"}, `with.method "FETCH" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
		{"method with a space", map[string]any{"url": u, "method": "GE T"}, `with.method "GE T"`},
		{"method not a string", map[string]any{"url": u, "method": true}, "with.method must be a string"},
		{"headers a list", map[string]any{"url": u, "headers": []any{"X-A: b"}}, "with.headers must be a map of header name to value, not a list"},
		{"headers a string", map[string]any{"url": u, "headers": "X-A: b"}, "with.headers must be a map"},
		{"header value a map", map[string]any{"url": u, "headers": map[string]any{"X-A": map[string]any{}}}, `with.headers["X-A"] must be a string, not a map`},
		{"header value null", map[string]any{"url": u, "headers": map[string]any{"X-A": nil}}, `with.headers["X-A"] must be a string, not null`},
		{"header value with a newline", map[string]any{"url": u, "headers": map[string]any{"X-A": "a\r\nX-Evil: 1"}}, `with.headers["X-A"] holds a control character such as a newline`},
		{"header name with a space", map[string]any{"url": u, "headers": map[string]any{"X A": "b"}}, `invalid header name "X A"`},
		{"header name with a colon", map[string]any{"url": u, "headers": map[string]any{"X-A:": "b"}}, `invalid header name "X-A:"`},
		{"timeout not a duration", map[string]any{"url": u, "timeout": "soon"}, `with.timeout "soon" must be a positive duration`},
		{"timeout without a unit", map[string]any{"url": u, "timeout": "10"}, `with.timeout "10" must be a positive duration`},
		{"timeout negative", map[string]any{"url": u, "timeout": "-1s"}, `with.timeout "-1s" must be a positive duration`},
		{"timeout zero", map[string]any{"url": u, "timeout": "0s"}, `with.timeout "0s" must be a positive duration`},
		{"timeout a number", map[string]any{"url": u, "timeout": float64(10)}, "with.timeout must be a duration string"},
		{"expect_status empty", map[string]any{"url": u, "expect_status": []any{}}, "with.expect_status must be a status code"},
		{"expect_status 600", map[string]any{"url": u, "expect_status": uint64(600)}, "with.expect_status must be a status code"},
		{"expect_status 99 in a list", map[string]any{"url": u, "expect_status": []any{float64(200), float64(99)}}, "with.expect_status must be a status code"},
		{"expect_status fraction", map[string]any{"url": u, "expect_status": 200.5}, "with.expect_status must be a status code"},
		{"expect_status word", map[string]any{"url": u, "expect_status": "ok"}, "with.expect_status must be a status code"},
		{"expect_status map", map[string]any{"url": u, "expect_status": map[string]any{"a": 1}}, "with.expect_status must be a status code"},
		{"body that is not JSON", map[string]any{"url": u, "body": map[string]any{"f": func() {}}}, "with.body cannot be sent as JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runHTTP(t, tt.with)
			if out != nil {
				t.Errorf("output = %v, want nil", out)
			}
			requirePermanent(t, err, tt.want)
			if !strings.HasPrefix(err.Error(), "http: with.") || strings.Contains(err.Error(), "\n") {
				t.Errorf("err %q is not one line", err)
			}
		})
	}
}

func TestHTTPExpectStatusForms(t *testing.T) {
	t.Parallel()
	srv := newServer(t, statusHandler(202))
	for _, expect := range []any{
		int(202), int64(202), uint64(202), float64(202), json.Number("202"), "202",
		[]any{int(202)}, []any{uint64(200), uint64(202)}, []int{202},
	} {
		out := mustHTTP(t, map[string]any{"url": srv.URL, "expect_status": expect})
		if out.Status != 202 {
			t.Errorf("expect_status %#v: status = %d, want 202", expect, out.Status)
		}
	}
}

func TestHTTPRedirects(t *testing.T) {
	t.Parallel()
	// /hop/N redirects to /hop/N-1; /hop/0 answers.
	hops := func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hop/"))
		if err != nil || n <= 0 {
			_, _ = io.WriteString(w, "arrived")
			return
		}
		http.Redirect(w, r, "/hop/"+strconv.Itoa(n-1), http.StatusFound)
	}
	t.Run("5 redirects are followed", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, hops)
		if out := mustHTTP(t, map[string]any{"url": srv.URL + "/hop/5"}); string(out.Body) != `"arrived"` {
			t.Errorf("body = %s, want \"arrived\"", out.Body)
		}
	})
	t.Run("a 6th is refused", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, hops)
		_, err := runHTTP(t, map[string]any{"url": srv.URL + "/hop/6"})
		requirePermanent(t, err, "http GET "+srv.URL+"/hop/6: stopped after 5 redirects")
	})
	t.Run("a redirect to another scheme is refused", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "ftp://files.example.com/a", http.StatusFound)
		})
		_, err := runHTTP(t, map[string]any{"url": srv.URL})
		requirePermanent(t, err, "redirected to a URL that is not http or https")
	})
	t.Run("307 keeps the method and body", func(t *testing.T) {
		t.Parallel()
		rec, got := newRecorder(t)
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, rec.URL+"/to", http.StatusTemporaryRedirect)
		})
		mustHTTP(t, map[string]any{"url": srv.URL, "body": map[string]any{"a": "b"}})
		if r := <-got; r.Method != "POST" || r.Body != `{"a":"b"}` {
			t.Errorf("redirected request = %s %q, want POST {\"a\":\"b\"}", r.Method, r.Body)
		}
	})
	headers := map[string]any{
		"X-Api-Key": "key-0001", "Authorization": "Bearer tok-0001", "Accept": "application/json",
	}
	t.Run("same origin keeps the user's headers", func(t *testing.T) {
		t.Parallel()
		got := make(chan http.Header, 1)
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/from" {
				http.Redirect(w, r, "/to", http.StatusFound)
				return
			}
			got <- r.Header.Clone()
		})
		mustHTTP(t, map[string]any{"url": srv.URL + "/from", "headers": headers})
		h := <-got
		for name, want := range map[string]string{"X-Api-Key": "key-0001", "Authorization": "Bearer tok-0001", "Accept": "application/json"} {
			if h.Get(name) != want {
				t.Errorf("after a same-origin redirect %s = %q, want %q", name, h.Get(name), want)
			}
		}
	})
	t.Run("another origin gets only descriptive headers", func(t *testing.T) {
		t.Parallel()
		rec, got := newRecorder(t)
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, rec.URL+"/to", http.StatusFound)
		})
		mustHTTP(t, map[string]any{"url": srv.URL, "headers": headers})
		h := (<-got).Header
		for name, want := range map[string]string{
			"X-Api-Key": "", "Authorization": "", "Accept": "application/json",
			"Idempotency-Key": "run-0001.charge", "User-Agent": "jetflow",
		} {
			if h.Get(name) != want {
				t.Errorf("after a cross-origin redirect %s = %q, want %q", name, h.Get(name), want)
			}
		}
	})
}

func TestHTTPResponseBodyLimit(t *testing.T) {
	t.Parallel()
	const limit = 16 << 20
	tests := []struct {
		name    string
		size    int
		length  bool // send Content-Length
		wantErr string
	}{
		{"exactly the limit", limit, true, ""},
		{"over, with Content-Length", limit + 1, true, "the response body is 16777217 bytes, over the 16 MiB limit"},
		{"over, streamed", limit + 1, false, "the response body is over the 16 MiB limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				if tt.length {
					w.Header().Set("Content-Length", strconv.Itoa(tt.size))
				} else {
					w.(http.Flusher).Flush() // chunked: no length up front
				}
				_, _ = io.WriteString(w, strings.Repeat("x", tt.size))
			})
			if tt.wantErr == "" {
				out := mustHTTP(t, map[string]any{"url": srv.URL})
				var body string
				if err := json.Unmarshal(out.Body, &body); err != nil || len(body) != tt.size {
					t.Errorf("body is %d bytes (%v), want %d", len(body), err, tt.size)
				}
				return
			}
			_, err := runHTTP(t, map[string]any{"url": srv.URL})
			requirePermanent(t, err, "http GET "+srv.URL+": 200 OK: "+tt.wantErr)
		})
	}
}

// blockingServer answers no request until the request or the test ends; arrived gets a value
// for each request that came in.
func blockingServer(t *testing.T) (srv *httptest.Server, arrived <-chan struct{}) {
	t.Helper()
	in := make(chan struct{}, 10)
	release := make(chan struct{})
	srv = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close, so Close does not wait
	return srv, in
}

func TestHTTPContextCancel(t *testing.T) {
	t.Parallel()
	srv, arrived := blockingServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		<-arrived
		cancel()
	}()
	s := newStep(map[string]any{"url": srv.URL + "/slow?token=abcdef123"}, "")
	out, err := nodes.HTTP(ctx, s)
	if out != nil {
		t.Errorf("output = %v, want nil", out)
	}
	requireRetryable(t, err, "http GET "+srv.URL+"/slow: context canceled")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %q does not wrap context.Canceled", err)
	}
}

func TestHTTPContextAlreadyDone(t *testing.T) {
	t.Parallel()
	srv, _ := blockingServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := nodes.HTTP(ctx, newStep(map[string]any{"url": srv.URL}, ""))
	requireRetryable(t, err, "context canceled")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %q does not wrap context.Canceled", err)
	}
}

func TestHTTPWithTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := blockingServer(t)
	_, err := runHTTP(t, map[string]any{"url": srv.URL, "timeout": "50ms"})
	requireRetryable(t, err, "http GET "+srv.URL+": no complete response within 50ms (with.timeout)")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %q does not wrap context.DeadlineExceeded", err)
	}
}

func TestHTTPConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err := runHTTP(t, map[string]any{"url": srv.URL + "/x"})
	requireRetryable(t, err, "http GET "+srv.URL+"/x: ", "connection refused")
	var ue *url.Error
	if errors.As(err, &ue) {
		t.Errorf("err wraps a *url.Error (%q), whose text holds the whole URL", ue)
	}
}

func TestHTTPConnectionReset(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close() // no response at all
		}
	})
	_, err := runHTTP(t, map[string]any{"url": srv.URL})
	requireRetryable(t, err, "http GET "+srv.URL+": ")
}

// Secrets for TestHTTPSecretsNeverInErrors: long and distinct, so a hit is not a coincidence.
const (
	secretHeader = "sk_live_HEADERSECRET_4242"
	secretBearer = "tok_BEARERSECRET_4242"
	secretQuery  = "QUERYSECRET_4242"
	secretPass   = "PASSWORDSECRET_4242"
	secretFrag   = "FRAGMENTSECRET_4242"
)

var secrets = []string{secretHeader, secretBearer, secretQuery, secretPass, secretFrag}

// echo writes everything the request carried into the response body.
func echo(w io.Writer, r *http.Request) {
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "you sent %s %s\n", r.Method, r.URL.String())
	for _, k := range names {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
	}
	if user, pass, ok := r.BasicAuth(); ok {
		fmt.Fprintf(w, "user %s password %s\n", user, pass)
	}
}

// requireNoSecret fails if any error in err's chain shows a secret, whole or escaped.
func requireNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("err is nil, want an error")
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		for _, text := range []string{e.Error(), fmt.Sprintf("%v", e), fmt.Sprintf("%+v", e), fmt.Sprintf("%q", e)} {
			for _, s := range secrets {
				if strings.Contains(text, s) || strings.Contains(text, url.QueryEscape(s)) || strings.Contains(text, s[:8]) {
					t.Errorf("error %q (%T in the chain of %T) shows secret %q", text, e, err, s)
				}
			}
		}
	}
}

func TestHTTPSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	headers := map[string]any{"X-Api-Key": secretHeader, "Authorization": "Bearer " + secretBearer}
	// secretURL is base with userinfo, a secret query and a fragment added.
	secretURL := func(base string) string {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword("user", secretPass)
		u.RawQuery = url.Values{"api_key": {secretQuery}, "page": {"2"}}.Encode()
		u.Fragment = secretFrag
		return u.String()
	}

	// The echo is real: on success the secrets come back in the body.
	t.Run("the server sees the secrets", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { echo(w, r) })
		out := mustHTTP(t, map[string]any{"url": secretURL(srv.URL + "/echo"), "headers": headers})
		// An Authorization header takes the place of the URL's basic auth: ask once without.
		noAuth := mustHTTP(t, map[string]any{"url": secretURL(srv.URL + "/echo")})
		body := string(out.Body) + string(noAuth.Body)
		for _, s := range []string{secretHeader, secretBearer, secretQuery, secretPass} {
			if !strings.Contains(body, s) {
				t.Errorf("echoed bodies %s lack %q: the test proves nothing", body, s)
			}
		}
	})

	for _, code := range []int{301, 400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504} {
		for _, auth := range []string{"headers", "basic auth"} {
			t.Run("status "+strconv.Itoa(code)+" "+auth, func(t *testing.T) {
				t.Parallel()
				srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
					if code == 429 || code == 503 {
						w.Header().Set("Retry-After", "3")
					}
					w.Header().Set("X-Echo-Key", r.Header.Get("X-Api-Key"))
					w.WriteHeader(code) // a 301 without Location is not followed
					echo(w, r)
				})
				with := map[string]any{"url": secretURL(srv.URL + "/v1/x"), "body": map[string]any{"k": secretHeader}}
				want := "api_key=[REDACTED]&page=2"
				if auth == "headers" {
					with["headers"] = headers
					want = "X-Api-Key: [REDACTED]"
				}
				_, err := runHTTP(t, with)
				requireNoSecret(t, err)
				requireContains(t, err, "http POST "+srv.URL+"/v1/x: "+strconv.Itoa(code), "you sent POST", want)
			})
		}
	}

	t.Run("a secret cut by truncation", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			// The key starts a few bytes before the 512-byte cut.
			_, _ = io.WriteString(w, strings.Repeat("p", 500)+" "+r.Header.Get("X-Api-Key")+" and more")
		})
		_, err := runHTTP(t, map[string]any{"url": srv.URL, "headers": headers})
		requirePermanent(t, err)
		requireNoSecret(t, err)
	})

	t.Run("a secret cut by the read limit", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			// Whitespace collapses to nothing, so the read limit falls inside the key.
			_, _ = io.WriteString(w, strings.Repeat(" ", 64<<10-10)+r.Header.Get("X-Api-Key"))
		})
		_, err := runHTTP(t, map[string]any{"url": srv.URL, "headers": headers})
		requirePermanent(t, err)
		requireNoSecret(t, err)
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL + "/v1/x"), "headers": headers})
		requireRetryable(t, err, "http GET "+srv.URL+"/v1/x: ")
		requireNoSecret(t, err)
	})

	t.Run("connection reset", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
		})
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL), "headers": headers})
		requireRetryable(t, err)
		requireNoSecret(t, err)
	})

	t.Run("with.timeout", func(t *testing.T) {
		t.Parallel()
		srv, _ := blockingServer(t)
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL), "headers": headers, "timeout": "20ms"})
		requireRetryable(t, err)
		requireNoSecret(t, err)
	})

	t.Run("context cancelled", func(t *testing.T) {
		t.Parallel()
		srv, arrived := blockingServer(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			<-arrived
			cancel()
		}()
		_, err := nodes.HTTP(ctx, newStep(map[string]any{"url": secretURL(srv.URL), "headers": headers}, ""))
		requireRetryable(t, err)
		requireNoSecret(t, err)
	})

	t.Run("too many redirects", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.String(), http.StatusFound) // query and all
		})
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL), "headers": headers})
		requirePermanent(t, err, "stopped after 5 redirects")
		requireNoSecret(t, err)
	})

	t.Run("redirect to another scheme", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "ftp://host/?key="+secretQuery, http.StatusFound)
		})
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL), "headers": headers})
		requirePermanent(t, err)
		requireNoSecret(t, err)
	})

	t.Run("body over the limit", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(16<<20+1))
		})
		_, err := runHTTP(t, map[string]any{"url": secretURL(srv.URL), "headers": headers})
		requirePermanent(t, err)
		requireNoSecret(t, err)
	})

	badWith := map[string]map[string]any{
		"bad scheme":         {"url": "ftp://user:" + secretPass + "@files.example.com/a?key=" + secretQuery},
		"unparseable":        {"url": "http://user:" + secretPass + "@a b.example.com/?key=" + secretQuery},
		"no scheme":          {"url": "user:" + secretPass + "@api.example.com/?key=" + secretQuery},
		"bad method":         {"url": "https://api.example.com/?key=" + secretQuery, "method": "BAD", "headers": headers},
		"bad header value":   {"url": "https://api.example.com/", "headers": map[string]any{"X-Api-Key": secretHeader + "\n"}},
		"bad header name":    {"url": "https://api.example.com/", "headers": map[string]any{"X-Api-Key": secretHeader, "Bad Name": "x"}},
		"header value a map": {"url": "https://api.example.com/", "headers": map[string]any{"X-Api-Key": map[string]any{"v": secretHeader}}},
		"bad timeout":        {"url": secretURL("https://api.example.com/"), "headers": headers, "timeout": "x"},
		"bad expect_status":  {"url": secretURL("https://api.example.com/"), "headers": headers, "expect_status": "x"},
		"body not JSON":      {"url": secretURL("https://api.example.com/"), "headers": headers, "body": map[string]any{"f": func() {}}},
	}
	for name, with := range badWith {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := runHTTP(t, with)
			requirePermanent(t, err, "http: with.")
			requireNoSecret(t, err)
		})
	}
}

func ExampleHTTP() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"charged":true,"key":%q}`, r.Header.Get("Idempotency-Key"))
	}))
	defer srv.Close()

	out, err := nodes.HTTP(context.Background(), &consumer.Step{
		RunID: "r1", Node: "charge", IdempotencyKey: "r1.charge",
		With: map[string]any{
			"url":     srv.URL + "/charges",
			"body":    map[string]any{"amount": 500},
			"headers": map[string]any{"Authorization": "Bearer sk_test_123"},
		},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	m := out.(map[string]any)
	fmt.Println(m["status"], string(m["body"].(json.RawMessage)))
	// Output: 200 {"charged":true,"key":"r1.charge"}
}
