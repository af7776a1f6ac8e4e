package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
)

// TestProbes stops the NATS server under a running metrics.Server: /readyz turns 503 and
// back to 200 when NATS returns; /healthz stays 200 throughout.
func TestProbes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, base := f.server(metrics.ServerConfig{})
	status := func(path string) int {
		code, _ := get(t, base+path)
		return code
	}
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusOK }, "/readyz never 200")
	if c := status("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d", c)
	}

	f.srv.Stop()
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusServiceUnavailable },
		"/readyz did not turn 503 after NATS stopped")
	if c := status("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d while NATS is down, want 200", c)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Fatalf("/readyz = %d %q", code, body)
	}

	f.srv.Restart()
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusOK },
		"/readyz did not return to 200 after NATS came back")
	if c := status("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d", c)
	}
}

// TestProbesHungServer puts a proxy between the dashboard's NATS connection and the server
// and makes it hang: the connection stays open but nothing answers (a stopped or wedged
// server, a black-holed path). /readyz turns 503 and back to 200 when the proxy forwards
// again; /healthz stays 200 throughout.
func TestProbesHungServer(t *testing.T) {
	t.Parallel()
	f := setup(t)
	proxy := startHangProxy(t, strings.TrimPrefix(f.srv.ClientURL(), "nats://"))
	nc, err := nats.Connect(proxy.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, base := f.serverOn(js, metrics.ServerConfig{})
	status := func(path string) int {
		code, _ := get(t, base+path)
		return code
	}
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusOK }, "/readyz never 200")

	proxy.hang()
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusServiceUnavailable },
		"/readyz did not turn 503 while NATS did not answer")
	if st := nc.Status(); st != nats.CONNECTED {
		t.Fatalf("the connection is %s: the test must hang the server, not close the connection", st)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "does not answer") {
		t.Fatalf("/readyz = %d %q, want 503 saying NATS does not answer", code, body)
	}
	if c := status("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d while NATS hangs, want 200", c)
	}

	proxy.resume()
	natstest.Eventually(t, 15*time.Second, func() bool { return status("/readyz") == http.StatusOK },
		"/readyz did not return to 200 after NATS answered again")
	if c := status("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d", c)
	}
}

// TestReadyzDraining checks that /readyz is 503 while the process drains.
func TestReadyzDraining(t *testing.T) {
	t.Parallel()
	f := setup(t)
	draining := make(chan struct{})
	_, base := f.server(metrics.ServerConfig{Draining: func() bool {
		select {
		case <-draining:
			return true
		default:
			return false
		}
	}})
	natstest.Eventually(t, 15*time.Second, func() bool { c, _ := get(t, base+"/readyz"); return c == http.StatusOK }, "/readyz never 200")
	close(draining)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining = %d %q", code, body)
	}
}

// TestMutationAuth checks who may change state: nobody without a configured token (403), not
// without or with a wrong token (401), not from another origin (403); the token from the
// same origin may.
func TestMutationAuth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, open := f.server(metrics.ServerConfig{})
	_, guarded := f.server(metrics.ServerConfig{AdminToken: "s3cret"})
	purge := func(base string, header map[string]string) (int, string) {
		return do(t, request{method: http.MethodPost, url: base + "/api/dlq/purge", body: `{"all": true}`, header: header})
	}
	same := strings.TrimPrefix(guarded, "http://")
	cases := []struct {
		name   string
		base   string
		header map[string]string
		want   int
	}{
		{"no token configured", open, map[string]string{"Authorization": "Bearer s3cret"}, http.StatusForbidden},
		{"no token sent", guarded, nil, http.StatusUnauthorized},
		{"wrong token", guarded, map[string]string{"Authorization": "Bearer s3cre"}, http.StatusUnauthorized},
		{"not a bearer", guarded, map[string]string{"Authorization": "Basic s3cret"}, http.StatusUnauthorized},
		{"foreign origin", guarded, map[string]string{"Authorization": "Bearer s3cret", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", guarded, map[string]string{"Authorization": "Bearer s3cret", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same origin", guarded, map[string]string{"Authorization": "Bearer s3cret", "Origin": "http://" + same, "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"no browser headers", guarded, map[string]string{"Authorization": "Bearer s3cret"}, http.StatusOK},
	}
	for _, c := range cases {
		code, body := purge(c.base, c.header)
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
		if code != http.StatusOK {
			var e metrics.APIError
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s: error body %q is not {\"error\": …}", c.name, body)
			}
		}
	}
	// Mutations are POST only.
	if code, _ := get(t, guarded+"/api/dlq/purge"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/dlq/purge = %d, want 405", code)
	}
	// A cancel of an unknown run with the token is a 404, not a 403.
	code, _ := do(t, request{method: http.MethodPost, url: guarded + "/api/runs/nope/cancel", header: map[string]string{"Authorization": "Bearer s3cret"}})
	if code != http.StatusNotFound {
		t.Errorf("cancel of an unknown run = %d, want 404", code)
	}
}

// TestPublicAddrNeedsToken checks that listening on every interface needs a token or an
// explicit allowance.
func TestPublicAddrNeedsToken(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		if _, err := metrics.NewServer(f.js, f.store, metrics.ServerConfig{Addr: addr}); !errors.Is(err, metrics.ErrPublicWithoutToken) {
			t.Errorf("%s without a token: %v, want ErrPublicWithoutToken", addr, err)
		}
	}
	if _, err := metrics.NewServer(f.js, f.store, metrics.ServerConfig{Addr: "0.0.0.0:0", AdminToken: "t"}); err != nil {
		t.Errorf("with a token: %v", err)
	}
	if _, err := metrics.NewServer(f.js, f.store, metrics.ServerConfig{Addr: "0.0.0.0:0", AllowAllInterfaces: true}); err != nil {
		t.Errorf("allowed: %v", err)
	}
	if _, err := metrics.NewServer(f.js, f.store, metrics.ServerConfig{Addr: "localhost"}); err == nil {
		t.Errorf("an address without a port was accepted")
	}
}

// getJSON GETs url and decodes its JSON body into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

// TestAPI runs a completed, a failed and a hanging run, and checks the JSON of every read
// endpoint, then replays the failed run's DLQ entry and cancels the hanging run through the
// API.
func TestAPI(t *testing.T) {
	t.Parallel()
	f := setup(t)
	w := f.worker()
	_, base := f.server(metrics.ServerConfig{AdminToken: "tok"})
	okRun, permRun, hangRun := f.start("ok"), f.start("perm"), f.start("hang")
	f.waitEnd(okRun, checkpoint.EndCompleted)
	f.waitEnd(permRun, checkpoint.EndFailed)
	admin := map[string]string{"Authorization": "Bearer tok"}

	var runs []map[string]any
	getJSON(t, base+"/api/runs", &runs)
	if len(runs) != 3 {
		t.Fatalf("/api/runs: %d runs, want 3: %v", len(runs), runs)
	}
	for _, k := range []string{"id", "workflow", "status", "created_at", "ended_at", "reason"} {
		if _, ok := runs[0][k]; !ok {
			t.Errorf("/api/runs item lacks %q: %v", k, runs[0])
		}
	}
	var failed []checkpoint.RunSummary
	getJSON(t, base+"/api/runs?status=failed", &failed)
	if len(failed) != 1 || failed[0].ID != permRun || failed[0].Workflow != "perm" {
		t.Fatalf("/api/runs?status=failed: %+v", failed)
	}
	var byWorkflow []checkpoint.RunSummary
	getJSON(t, base+"/api/runs?workflow=ok&limit=5", &byWorkflow)
	if len(byWorkflow) != 1 || byWorkflow[0].ID != okRun {
		t.Fatalf("/api/runs?workflow=ok: %+v", byWorkflow)
	}
	if code, _ := get(t, base+"/api/runs?status=weird"); code != http.StatusBadRequest {
		t.Errorf("bad status filter = %d, want 400", code)
	}

	var run map[string]any
	getJSON(t, base+"/api/runs/"+permRun, &run)
	nodes, _ := run["nodes"].(map[string]any)
	p, _ := nodes["p"].(map[string]any)
	if run["status"] != "failed" || p["status"] != "dead" || p["output"] != nil || run["payloads_hidden"] != true {
		t.Fatalf("/api/runs/%s: %v", permRun, run)
	}
	if e, _ := p["error"].(string); strings.Contains(e, "s3cr3t") || !strings.HasPrefix(e, "401 unauthorized") {
		t.Errorf("node error %q: want its first line only", e)
	}
	getJSON(t, base+"/api/runs/"+okRun, &run)
	if nodes := run["nodes"].(map[string]any); nodes["b"].(map[string]any)["output"] != nil {
		t.Errorf("an output is shown although payloads are hidden: %v", run)
	}
	if code, _ := get(t, base+"/api/runs/no-such-run"); code != http.StatusNotFound {
		t.Errorf("unknown run = %d, want 404", code)
	}

	var list metrics.DLQList
	getJSON(t, base+"/api/dlq", &list)
	if list.Total != 1 || len(list.Entries) != 1 || list.Entries[0].RunID != permRun || list.Entries[0].Reason != "permanent error" {
		t.Fatalf("/api/dlq: %+v", list)
	}
	if strings.Contains(list.Entries[0].Error, "s3cr3t") {
		t.Errorf("DLQ error shows the payload: %q", list.Entries[0].Error)
	}
	var groups metrics.DLQList
	getJSON(t, base+"/api/dlq?group=1", &groups)
	if len(groups.Groups) != 1 || groups.Groups[0].Count != 1 || groups.Groups[0].Node != "p" || groups.Entries != nil {
		t.Fatalf("/api/dlq?group=1: %+v", groups)
	}

	var workers []map[string]any
	natstest.Eventually(t, 10*time.Second, func() bool {
		getJSON(t, base+"/api/workers", &workers)
		return len(workers) == 1
	}, "/api/workers never listed the worker")
	if workers[0]["id"] != w.ID() || workers[0]["types"] == nil || workers[0]["seen"] == nil {
		t.Errorf("/api/workers: %v", workers)
	}
	var breakers []metrics.BreakerView
	getJSON(t, base+"/api/breakers", &breakers)
	if len(breakers) != 0 {
		t.Errorf("/api/breakers: %v, want none open", breakers)
	}
	var overview metrics.Overview
	getJSON(t, base+"/api/overview", &overview)
	if overview.DLQDepth != 1 || len(overview.Backlog) < 4 || len(overview.Errors) != 0 {
		t.Errorf("/api/overview: %+v", overview)
	}
	var health []metrics.HealthView
	getJSON(t, base+"/api/health", &health)

	// Replay the dead step once it can succeed: the failed run completes.
	f.fixed.Store(true)
	code, body := do(t, request{method: http.MethodPost, url: base + "/api/dlq/replay", body: `{"ids": [` + itoa(list.Entries[0].ID) + `]}`, header: admin})
	var rr metrics.ReplayResponse
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rr) != nil || rr.Replayed != 1 || rr.Failed != 0 {
		t.Fatalf("replay: %d %s", code, body)
	}
	f.waitEnd(permRun, checkpoint.EndCompleted)
	code, body = do(t, request{method: http.MethodPost, url: base + "/api/dlq/replay", body: `{"ids": [` + itoa(list.Entries[0].ID) + `]}`, header: admin})
	if code != http.StatusConflict || !strings.Contains(body, "no DLQ entry") {
		t.Errorf("second replay: %d %s, want 409 naming the missing entry", code, body)
	}
	if code, _ := do(t, request{method: http.MethodPost, url: base + "/api/dlq/replay", body: `{}`, header: admin}); code != http.StatusBadRequest {
		t.Errorf("empty replay = %d, want 400", code)
	}

	// Cancel the hanging run: once, then again (a no-op).
	var cr metrics.CancelResponse
	code, body = do(t, request{method: http.MethodPost, url: base + "/api/runs/" + hangRun + "/cancel", body: `{"reason": "test"}`, header: admin})
	if code != http.StatusOK || json.Unmarshal([]byte(body), &cr) != nil || !cr.Cancelled || cr.ID != hangRun {
		t.Fatalf("cancel: %d %s", code, body)
	}
	f.waitEnd(hangRun, checkpoint.EndCancelled)
	code, body = do(t, request{method: http.MethodPost, url: base + "/api/runs/" + hangRun + "/cancel", header: admin})
	if code != http.StatusOK || json.Unmarshal([]byte(body), &cr) != nil || cr.Cancelled {
		t.Errorf("second cancel: %d %s", code, body)
	}
	code, _ = do(t, request{method: http.MethodPost, url: base + "/api/runs/" + okRun + "/cancel", header: admin})
	if code != http.StatusConflict {
		t.Errorf("cancel of a completed run = %d, want 409", code)
	}
}

// TestShowPayloads checks that outputs and whole errors are shown when asked.
func TestShowPayloads(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.worker()
	_, base := f.server(metrics.ServerConfig{ShowPayloads: true})
	okRun, permRun := f.start("ok"), f.start("perm")
	f.waitEnd(okRun, checkpoint.EndCompleted)
	f.waitEnd(permRun, checkpoint.EndFailed)
	var run checkpoint.RunView
	getJSON(t, base+"/api/runs/"+okRun, &run)
	if strings.Join(strings.Fields(string(run.Nodes["b"].Output)), "") != `{"ok":true}` {
		t.Errorf("output %s, want {\"ok\":true}", run.Nodes["b"].Output)
	}
	getJSON(t, base+"/api/runs/"+permRun, &run)
	if !strings.Contains(run.Nodes["p"].Error, "s3cr3t") {
		t.Errorf("error %q, want the whole text", run.Nodes["p"].Error)
	}
}

// TestHiddenEditedInput replays a dead node with an operator-edited input: the input is in
// the node's state, and /api/runs/{id} and the run page hide it unless payloads are shown.
func TestHiddenEditedInput(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.worker()
	_, hidden := f.server(metrics.ServerConfig{})
	_, shown := f.server(metrics.ServerConfig{ShowPayloads: true})
	id := f.start("perm")
	f.waitEnd(id, checkpoint.EndFailed)
	ctx := context.Background()
	entries, err := dlq.List(ctx, f.js, f.names, dlq.Filter{RunID: id})
	if err != nil || len(entries) != 1 {
		t.Fatalf("DLQ: %d entries, %v; want one", len(entries), err)
	}
	const secret = "edited-s3cr3t"
	f.fixed.Store(true)
	res, err := dlq.Replay(ctx, f.js, f.store, f.names, entries[0].ID,
		dlq.ReplayOptions{Input: json.RawMessage(`{"input": {"token": "` + secret + `"}}`)})
	if err != nil || !res.Edited {
		t.Fatalf("replay with an edited input: %+v %v", res, err)
	}
	f.waitEnd(id, checkpoint.EndCompleted)

	var run checkpoint.RunView
	getJSON(t, shown+"/api/runs/"+id, &run)
	if !strings.Contains(string(run.Nodes["p"].Input), secret) {
		t.Fatalf("with --show-payloads the edited input is %s, want it shown", run.Nodes["p"].Input)
	}
	for _, path := range []string{"/api/runs/" + id, "/runs/" + id, "/runs/" + id + "?partial=1"} {
		code, body := get(t, hidden+path)
		if code != http.StatusOK || strings.Contains(body, secret) {
			t.Errorf("GET %s with payloads hidden: %d, shows the edited input: %v", path, code, strings.Contains(body, secret))
		}
	}
	getJSON(t, hidden+"/api/runs/"+id, &run)
	if run.Nodes["p"].Input != nil || run.Nodes["p"].EditedFrom == 0 {
		t.Errorf("payloads hidden: input %s, edited from %d; want no input, the edit still recorded", run.Nodes["p"].Input, run.Nodes["p"].EditedFrom)
	}
}

// TestDashboardPages renders every page, whole and partial.
func TestDashboardPages(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.worker()
	reg := prometheus.NewRegistry()
	health, err := metrics.NewHealth(reg, nil, metrics.HealthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	health.Observe(metrics.ScopeType, typeOK, false, time.Millisecond)
	health.Evaluate()
	_, base := f.server(metrics.ServerConfig{AdminToken: "tok", Health: health})
	okRun, permRun := f.start("ok"), f.start("perm")
	f.waitEnd(okRun, checkpoint.EndCompleted)
	f.waitEnd(permRun, checkpoint.EndFailed)
	for _, c := range []struct {
		path string
		want []string
	}{
		{"/", []string{"Throughput", "Dead letters", okRun, permRun, typeOK, "Admin token"}},
		{"/runs", []string{okRun, permRun, `<option value="failed"`}},
		{"/runs?status=failed", []string{permRun}},
		{"/runs/" + permRun, []string{"<svg", `class="gnode s-dead"`, "permanent error", "Replay", "401 unauthorized"}},
		{"/runs/" + okRun, []string{"<svg", `class="gnode s-done"`, "waterfall"}},
		{"/dlq", []string{"permanent error", "Replay 1", "Purge"}},
		{"/breakers", []string{"Every breaker is closed", typeOK}},
		{"/static/app.js", []string{"EventSource"}},
		{"/static/app.css", []string{".pill"}},
		{"/metrics", []string{"jetflow_runs_started_total"}},
	} {
		code, body := get(t, base+c.path)
		if code != http.StatusOK {
			t.Errorf("GET %s = %d", c.path, code)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s lacks %q", c.path, w)
			}
		}
		if c.path == "/runs/"+permRun && strings.Contains(body, "s3cr3t") {
			t.Errorf("GET %s shows the hidden part of an error", c.path)
		}
	}
	if code, body := get(t, base+"/runs?partial=1"); code != http.StatusOK || strings.Contains(body, "<html") || !strings.Contains(body, okRun) {
		t.Errorf("partial runs page: %d %q", code, body)
	}
	if _, body := get(t, base+"/runs/"+permRun+"?partial=1"); strings.Contains(body, "<html") {
		t.Errorf("partial run page has the layout")
	}
	if code, _ := get(t, base+"/runs/nope"); code != http.StatusNotFound {
		t.Errorf("unknown run page = %d, want 404", code)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("unknown page = %d, want 404", code)
	}
	// A read-only server shows no action.
	_, ro := f.server(metrics.ServerConfig{})
	if _, body := get(t, ro+"/dlq"); strings.Contains(body, "data-post") || !strings.Contains(body, "read-only") {
		t.Errorf("read-only DLQ page offers actions")
	}
}

// TestEvents reads the first Server-Sent Event.
func TestEvents(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, base := f.server(metrics.ServerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var event string
	events := 0
	for events < 2 && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var o metrics.Overview
			if event != "overview" || json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &o) != nil || o.At.IsZero() {
				t.Fatalf("event %q data %q", event, line)
			}
			events++
		}
	}
	if events < 2 {
		t.Fatalf("read %d events: %v", events, sc.Err())
	}
}
