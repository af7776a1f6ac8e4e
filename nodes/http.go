package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Limits of the http node.
const (
	// maxResponseBody is the most of a response body the node reads, the same as the hard
	// limit on a node's output.
	maxResponseBody = 16 << 20
	// errorBodyRead is how much of an unexpected response's body is read for the error.
	errorBodyRead = 64 << 10
	// errorBodyShown is how much of it, on one line, the error keeps.
	errorBodyShown = 512
	// maxRedirects is how many redirects are followed, as curl -L --max-redirs 5.
	maxRedirects = 5
	// minSecretLen is the shortest header or query value that is redacted from errors:
	// shorter ones ("1", "yes") are not secrets, and blanking them would garble the message.
	minSecretLen = 4
	// redacted replaces a secret in an error message.
	redacted = "[REDACTED]"
)

// httpMethods are the methods with.method accepts.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// descriptiveHeaders name request headers whose values describe the format of a request, not
// who sends it: they are the only user headers sent on to another origin after a redirect, and
// their values are not redacted from errors.
var descriptiveHeaders = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding", "Content-Language",
	"Content-Type", "User-Agent",
}

// httpClient sends the requests of every http node in the process: one transport, so
// connections are kept and reused across steps. It honours HTTP_PROXY, HTTPS_PROXY and
// NO_PROXY.
var httpClient = &http.Client{Transport: newHTTPTransport(), CheckRedirect: checkRedirect}

func newHTTPTransport() *http.Transport {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		// Something replaced the default transport with a wrapper: start from Go's defaults.
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	t = t.Clone()
	// The default of 2 idle connections per host would make a busy worker calling one API
	// dial (and handshake) for most of its steps.
	t.MaxIdleConnsPerHost = 64
	return t
}

// Errors of a redirect the node will not follow; both are permanent.
var (
	errTooManyRedirects = fmt.Errorf("stopped after %d redirects", maxRedirects)
	errRedirectScheme   = errors.New("redirected to a URL that is not http or https")
)

// checkRedirect follows at most maxRedirects http(s) redirects, and sends the user's headers
// (other than descriptiveHeaders) only to the origin (scheme, host and port) they were
// written for, so an API key does not follow a redirect to another site.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return errTooManyRedirects
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return errRedirectScheme
	}
	first := via[0]
	if req.URL.Scheme == first.URL.Scheme && req.URL.Host == first.URL.Host {
		return nil
	}
	if user, ok := first.Context().Value(userHeadersKey{}).([]string); ok {
		for _, name := range user {
			req.Header.Del(name)
		}
	}
	return nil
}

// userHeadersKey carries, in the request's context, the names of the headers the user set
// that checkRedirect must not send to another origin.
type userHeadersKey struct{}

// HTTP sends one HTTP request described by the step's `with` and returns the response as
// {"status": int, "headers": {name: first value, …}, "body": …}. The body is the parsed JSON
// when the response's Content-Type is JSON (application/json or any +json type) and it parses,
// else the body as a string; header names are in canonical form ("Content-Type").
//
// with:
//   - url: required; an absolute http or https URL. Userinfo in it is sent as basic auth.
//   - method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, any case; the default is POST
//     when body is set and GET otherwise.
//   - headers: a map of header name to value (a string; numbers and booleans are written out).
//     A Host header sets the request's host.
//   - body: a string is sent as is; any other value (object, list, number, boolean) is sent
//     as JSON, with Content-Type application/json unless headers set a Content-Type. An
//     absent or null body sends none.
//   - timeout: a duration such as "10s" bounding the whole exchange, body included; without it
//     only the step's own timeout applies.
//   - expect_status: a status code or a list of them that count as success; the default is any
//     2xx.
//
// Every request carries Idempotency-Key (the step's key) and User-Agent: jetflow, unless
// headers set them. Redirects are followed as curl -L does, at most 5; on a redirect to another
// origin (scheme, host, port) only the descriptive headers (Accept, Accept-Encoding,
// Accept-Language, Content-Type, Content-Encoding, Content-Language, User-Agent) and
// Idempotency-Key go along, and URL userinfo is not sent there either. A response body over
// 16 MiB is a permanent error.
//
// Errors: network errors (refused, reset, DNS, TLS, timeouts) and statuses 5xx, 408 and 429
// are retried; a 429 or 503 with a Retry-After header (seconds or an HTTP date) is retried
// after that wait, at most an hour. Any other status that is not expected, and a bad `with`,
// fail permanently. An error names the method and the URL without its userinfo, query or
// fragment, and holds up to 512 bytes of the response body on one line. The values of the
// user's headers (but for the descriptive ones), of the query and of the userinfo never appear
// in it, not even where the server echoes them: they read [REDACTED]. (Values shorter than
// 4 bytes are not taken for secrets.)
func HTTP(ctx context.Context, s *consumer.Step) (any, error) {
	c, err := newHTTPCall(s)
	if err != nil {
		return nil, consumer.Permanent(c.fail(err.Error(), nil))
	}
	return c.do(ctx)
}

// httpCall is one parsed http step.
type httpCall struct {
	method  string
	url     *url.URL
	shown   string // the URL as errors show it: scheme://host/path
	header  http.Header
	host    string // a Host header, which net/http takes from Request.Host only
	body    []byte
	hasBody bool
	timeout time.Duration
	expect  []int    // nil: any 2xx
	idemKey string   // the step's idempotency key
	secrets []string // values that must not appear in errors, longest first
	user    []string // canonical names of user headers withheld from other origins
}

// newHTTPCall reads the step's `with`. It always returns a call whose fail can build the
// error, with as many secrets collected as were read before the problem.
func newHTTPCall(s *consumer.Step) (*httpCall, error) {
	c := &httpCall{header: make(http.Header), idemKey: s.IdempotencyKey}
	w := s.With
	rawURL, ok := w["url"].(string)
	switch {
	case w["url"] == nil:
		return c, errors.New("http: with.url is missing: set it to the http or https URL to call")
	case !ok:
		return c, fmt.Errorf("http: with.url must be a string, not %s", jsonKind(w["url"]))
	}
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		return c, fmt.Errorf("http: with.url %q is not a valid URL: check its characters and %%-escapes", redactRawURL(rawURL))
	}
	c.addURLSecrets(u)
	if u.Scheme != "http" && u.Scheme != "https" {
		return c, fmt.Errorf("http: with.url %q must start with http:// or https://", redactRawURL(rawURL))
	}
	if u.Host == "" || u.Hostname() == "" {
		return c, fmt.Errorf("http: with.url %q has no host", redactRawURL(rawURL))
	}
	c.url = u
	c.shown = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()

	if err := c.readHeaders(w["headers"]); err != nil {
		return c, err
	}

	if b, ok := w["body"]; ok && b != nil {
		c.hasBody = true
		switch b := b.(type) {
		case string:
			c.body = []byte(b)
		case []byte:
			c.body = b
		default:
			j, err := json.Marshal(b)
			if err != nil {
				return c, fmt.Errorf("http: with.body cannot be sent as JSON: %w", err)
			}
			c.body = j
			if c.header.Get("Content-Type") == "" {
				c.header.Set("Content-Type", "application/json")
			}
		}
	}

	switch m := w["method"].(type) {
	case nil:
		c.method = http.MethodGet
		if c.hasBody {
			c.method = http.MethodPost
		}
	case string:
		c.method = strings.ToUpper(strings.TrimSpace(m))
		if !slices.Contains(httpMethods, c.method) {
			return c, fmt.Errorf("http: with.method %q is not one of %s", m, strings.Join(httpMethods, ", "))
		}
	default:
		return c, fmt.Errorf("http: with.method must be a string such as \"POST\", not %s", jsonKind(m))
	}

	switch t := w["timeout"].(type) {
	case nil:
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(t))
		if err != nil || d <= 0 {
			return c, fmt.Errorf("http: with.timeout %q must be a positive duration such as \"10s\"", t)
		}
		c.timeout = d
	default:
		return c, fmt.Errorf("http: with.timeout must be a duration string such as \"10s\", not %s", jsonKind(t))
	}

	if v, ok := w["expect_status"]; ok && v != nil {
		codes, err := parseExpectStatus(v)
		if err != nil {
			return c, err
		}
		c.expect = codes
	}
	return c, nil
}

// readHeaders checks with.headers and fills c.header, c.host, c.user and c.secrets. No error
// quotes a header's value.
func (c *httpCall) readHeaders(v any) error {
	var m map[string]any
	switch h := v.(type) {
	case nil:
		return nil
	case map[string]any:
		m = h
	case map[string]string:
		m = make(map[string]any, len(h))
		for k, x := range h {
			m[k] = x
		}
	default:
		return fmt.Errorf("http: with.headers must be a map of header name to value, not %s", jsonKind(v))
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names) // the same problem is reported first on every attempt
	for _, name := range names {
		var val string
		switch x := m[name].(type) {
		case string:
			val = x
		case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, json.Number:
			val = fmt.Sprint(x)
		default:
			return fmt.Errorf("http: with.headers[%q] must be a string, not %s", name, jsonKind(x))
		}
		if !validHeaderName(name) {
			return fmt.Errorf("http: with.headers has an invalid header name %q: use letters, digits and - only", name)
		}
		canon := http.CanonicalHeaderKey(name)
		if !slices.Contains(descriptiveHeaders, canon) {
			c.addSecret(val)
			if canon == "Authorization" || canon == "Proxy-Authorization" {
				if _, cred, ok := strings.Cut(strings.TrimSpace(val), " "); ok {
					c.addSecret(strings.TrimSpace(cred))
				}
			}
			if canon != workflow.HeaderIdempotencyKey && canon != "Host" {
				c.user = append(c.user, canon)
			}
		}
		if !validHeaderValue(val) {
			return fmt.Errorf("http: with.headers[%q] holds a control character such as a newline: remove it", name)
		}
		if canon == "Host" {
			c.host = val
			continue
		}
		c.header.Set(canon, val)
	}
	return nil
}

// addURLSecrets records the userinfo and the query values of u, raw and decoded.
func (c *httpCall) addURLSecrets(u *url.URL) {
	if u.User != nil {
		c.addSecret(u.User.Username())
		if p, ok := u.User.Password(); ok {
			c.addSecret(p)
		}
		c.addSecret(u.User.String())
	}
	for _, kv := range strings.FieldsFunc(u.RawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		_, v, _ := strings.Cut(kv, "=")
		c.addSecret(v)
		if dec, err := url.QueryUnescape(v); err == nil {
			c.addSecret(dec)
		}
	}
	if u.Fragment != "" {
		c.addSecret(u.Fragment)
	}
}

func (c *httpCall) addSecret(v string) {
	if len(v) < minSecretLen || slices.Contains(c.secrets, v) {
		return
	}
	c.secrets = append(c.secrets, v)
	// Longest first, so a secret that contains another is replaced whole.
	slices.SortStableFunc(c.secrets, func(a, b string) int { return len(b) - len(a) })
}

// scrub replaces every secret in s.
func (c *httpCall) scrub(s string) string {
	for _, v := range c.secrets {
		s = strings.ReplaceAll(s, v, redacted)
	}
	return s
}

// cutPartialSecret drops a tail of s that is the start of a secret: what is left of a secret
// cut off by a read limit or by truncation.
func (c *httpCall) cutPartialSecret(s string) string {
	for _, v := range c.secrets {
		for k := min(len(v)-1, len(s)); k >= minSecretLen; k-- {
			if strings.HasSuffix(s, v[:k]) {
				s = s[:len(s)-k]
				break
			}
		}
	}
	return s
}

// httpError is the node's error: a message already free of secrets, over its cause. The
// cause is never a *url.Error, whose text would hold the full URL.
type httpError struct {
	msg string
	err error
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

// fail builds an error from msg, scrubbed of secrets.
func (c *httpCall) fail(msg string, cause error) error {
	return &httpError{msg: c.scrub(msg), err: cause}
}

// failf builds "http METHOD URL: <detail>", scrubbed of secrets.
func (c *httpCall) failf(cause error, format string, args ...any) error {
	return c.fail("http "+c.method+" "+c.shown+": "+fmt.Sprintf(format, args...), cause)
}

// do sends the request and reads the response.
func (c *httpCall) do(ctx context.Context) (any, error) {
	parent := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	ctx = context.WithValue(ctx, userHeadersKey{}, c.user)
	var body io.Reader
	if c.hasBody {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url.String(), body)
	if err != nil {
		return nil, consumer.Permanent(c.failf(nil, "cannot build the request: check with.url and with.method"))
	}
	req.Header = c.header.Clone()
	if c.host != "" {
		req.Host = c.host
	}
	if req.Header.Get(workflow.HeaderIdempotencyKey) == "" && c.idemKey != "" {
		req.Header.Set(workflow.HeaderIdempotencyKey, c.idemKey)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "jetflow")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, c.transportError(parent, ctx, err)
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, errorBodyRead)
		_ = resp.Body.Close()
	}()
	if !c.expected(resp.StatusCode) {
		return nil, c.statusError(parent, resp)
	}
	if resp.ContentLength > maxResponseBody {
		return nil, consumer.Permanent(c.failf(nil, "%s: the response body is %d bytes, over the 16 MiB limit", statusText(resp.StatusCode), resp.ContentLength))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, c.transportError(parent, ctx, err)
	}
	if len(b) > maxResponseBody {
		return nil, consumer.Permanent(c.failf(nil, "%s: the response body is over the 16 MiB limit", statusText(resp.StatusCode)))
	}
	headers := make(map[string]string, len(resp.Header))
	for k, v := range resp.Header {
		if len(v) > 0 {
			headers[k] = v[0]
		}
	}
	return map[string]any{
		"status":  resp.StatusCode,
		"headers": headers,
		"body":    responseBody(resp.Header.Get("Content-Type"), b),
	}, nil
}

// expected reports whether status counts as success.
func (c *httpCall) expected(status int) bool {
	if c.expect == nil {
		return status >= 200 && status <= 299
	}
	return slices.Contains(c.expect, status)
}

// transportError classifies an error from sending the request or reading the response.
func (c *httpCall) transportError(parent, ctx context.Context, err error) error {
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err // ue.Error() holds the full URL, query included
	}
	switch {
	case parent.Err() != nil:
		// The step was cancelled or timed out: not this request's fault.
		return c.failf(parent.Err(), "%v", parent.Err())
	case errors.Is(cause, errTooManyRedirects), errors.Is(cause, errRedirectScheme):
		return consumer.Permanent(c.failf(cause, "%v", cause))
	case ctx.Err() != nil:
		return c.failf(ctx.Err(), "no complete response within %v (with.timeout)", c.timeout)
	}
	return c.failf(cause, "%v", cause)
}

// statusError classifies a response whose status is not expected.
func (c *httpCall) statusError(parent context.Context, resp *http.Response) error {
	b, readErr := io.ReadAll(io.LimitReader(resp.Body, errorBodyRead))
	detail := statusText(resp.StatusCode)
	if snippet := c.snippet(b); snippet != "" {
		detail += ": " + snippet
	}
	if readErr != nil && parent.Err() != nil {
		return c.failf(parent.Err(), "%s (then %v)", detail, parent.Err())
	}
	code := resp.StatusCode
	err := c.failf(nil, "%s", detail)
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if v := resp.Header.Get("Retry-After"); v != "" {
			if d, ok := ParseRetryAfter(v, time.Now()); ok {
				return consumer.RetryAfter(d, err)
			}
		}
		return err
	case code >= 500 || code == http.StatusRequestTimeout:
		return err
	}
	return consumer.Permanent(err)
}

// snippet makes a response body fit an error: one line, control characters dropped,
// secrets replaced, at most errorBodyShown bytes.
func (c *httpCall) snippet(b []byte) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "\uFFFD")), " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	truncated := len(b) == errorBodyRead // more may have followed
	s = c.scrub(s)
	if len(s) > errorBodyShown {
		cut := errorBodyShown
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s, truncated = s[:cut], true
	}
	if truncated {
		s = c.cutPartialSecret(s) + "…"
	}
	return s
}

// statusText gives "404 Not Found", or just the code for one net/http does not name.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return strconv.Itoa(code) + " " + t
	}
	return strconv.Itoa(code)
}

// responseBody returns the parsed JSON for a JSON content type whose body parses, and the body
// as a string otherwise.
func responseBody(contentType string, b []byte) any {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		if t := bytes.TrimSpace(b); json.Valid(t) {
			return json.RawMessage(t)
		}
	}
	return string(b)
}

// parseExpectStatus reads with.expect_status: a status code or a non-empty list of them.
func parseExpectStatus(v any) ([]int, error) {
	bad := func() error {
		return errors.New("http: with.expect_status must be a status code (100-599) or a list of them, such as [200, 201]")
	}
	var list []any
	switch x := v.(type) {
	case []any:
		list = x
	case []int:
		for _, n := range x {
			list = append(list, n)
		}
	default:
		list = []any{x}
	}
	if len(list) == 0 {
		return nil, bad()
	}
	codes := make([]int, 0, len(list))
	for _, x := range list {
		n, ok := toInt(x)
		if !ok || n < 100 || n > 599 {
			return nil, bad()
		}
		codes = append(codes, n)
	}
	return codes, nil
}

// toInt reads a whole number from the forms YAML, JSON and expressions produce.
func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int8:
		return int(n), true
	case int16:
		return int(n), true
	case int32:
		return int(n), true
	case int64:
		return int(max(min(n, math.MaxInt32), math.MinInt32)), true
	case uint:
		return int(min(n, math.MaxInt32)), true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(min(n, math.MaxInt32)), true
	case uint64:
		return int(min(n, math.MaxInt32)), true
	case float32:
		return toInt(float64(n))
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
			return 0, false
		}
		return int(n), true
	case json.Number:
		i, err := n.Int64()
		return int(max(min(i, math.MaxInt32), math.MinInt32)), err == nil
	case string:
		i, err := strconv.Atoi(strings.TrimSpace(n))
		return i, err == nil
	}
	return 0, false
}

// jsonKind names the JSON kind of a `with` value for an error, without showing the value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any, map[string]string:
		return "a map"
	case []any:
		return "a list"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, json.Number:
		return "a number"
	}
	return fmt.Sprintf("a %T", v)
}

// redactRawURL shows a URL that may not parse without its userinfo, query or fragment.
func redactRawURL(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	start := 0
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	end := len(s)
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		end = start + i
	}
	if at := strings.LastIndexByte(s[start:end], '@'); at >= 0 {
		s = s[:start] + s[start+at+1:]
	}
	return s
}

// validHeaderName reports whether name is an HTTP token (RFC 9110, section 5.6.2).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v has no control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
