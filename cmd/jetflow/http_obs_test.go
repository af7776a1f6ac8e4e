package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
)

// TestWorkerHTTP runs a worker wired as `jetflow worker --http --admin-token` wires it, and
// checks the endpoints, the metrics of real runs, and /readyz while draining.
func TestWorkerHTTP(t *testing.T) {
	t.Parallel()
	e := newObsEnv(t, httpFlags{addr: "127.0.0.1:0", adminToken: obsToken})
	if !strings.HasPrefix(e.base, "http://127.0.0.1:") {
		t.Fatalf("dashboard URL %q", e.base)
	}
	ok, failed := e.start("diamond"), e.start("broken")
	e.waitEnd(ok, checkpoint.EndCompleted)
	e.waitEnd(failed, checkpoint.EndFailed)

	natstest.Eventually(t, 15*time.Second, func() bool { c, _ := e.httpDo(http.MethodGet, "/readyz", "", nil); return c == http.StatusOK },
		"/readyz never 200")
	var metrics string
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, metrics = e.httpDo(http.MethodGet, "/metrics", "", nil)
		return strings.Contains(metrics, `jetflow_runs_finished_total{status="failed",workflow="broken"} 1`)
	}, "/metrics lacks the failed run")
	for _, want := range []string{
		`jetflow_runs_started_total{workflow="diamond"} 1`,
		`jetflow_runs_finished_total{status="completed",workflow="diamond"} 1`,
		`jetflow_steps_total{node="report",outcome="succeeded",workflow="diamond"} 1`,
		`jetflow_steps_total{node="authenticate",outcome="dead_lettered",workflow="broken"} 1`,
		`jetflow_dlq_depth_messages 1`,
		`jetflow_consumer_pending_messages{consumer="jetflow-exec"} 0`,
		`jetflow_build_info{go_version=`,
		`go_goroutines `,
		`process_start_time_seconds `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, body := e.httpDo(http.MethodGet, "/runs/"+failed, "", nil); code != http.StatusOK || !strings.Contains(body, "Replay") {
		t.Errorf("run page: %d", code)
	}
	e.draining.Store(true)
	if code, body := e.httpDo(http.MethodGet, "/readyz", "", nil); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %s", code, body)
	}
	if code, _ := e.httpDo(http.MethodGet, "/healthz", "", nil); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d", code)
	}
}

// TestWorkerWithoutHTTP checks that a worker without --http still has its metrics and no
// server.
func TestWorkerWithoutHTTP(t *testing.T) {
	t.Parallel()
	e := newObsEnv(t, httpFlags{})
	if e.obs.url() != "" || e.obs.server != nil {
		t.Fatalf("a server without --http: %q", e.obs.url())
	}
	id := e.start("diamond")
	e.waitEnd(id, checkpoint.EndCompleted)
	var nilObs *obs
	if nilObs.observer() != nil || nilObs.url() != "" {
		t.Errorf("a nil *obs observes something")
	}
	nilObs.attach(nil)
	nilObs.start()()
}

// TestHTTPFlags checks the flags' defaults and that a public address needs a token.
func TestHTTPFlags(t *testing.T) {
	t.Parallel()
	e := newObsEnv(t, httpFlags{})
	if _, err := e.app.newObs(e.c, httpFlags{addr: "0.0.0.0:0"}, 4, nil, 0); err == nil || exitCode(err) != exitUsage {
		t.Errorf("--http 0.0.0.0:0 without --admin-token: %v, want a usage error", err)
	}
	o, err := e.app.newObs(e.c, httpFlags{addr: "0.0.0.0:0", adminToken: "t"}, 4, nil, 0)
	if err != nil {
		t.Fatalf("--http 0.0.0.0:0 --admin-token t: %v", err)
	}
	o.start()() // binds, then stops
	if _, err := e.app.newObs(e.c, httpFlags{addr: "nonsense"}, 4, nil, 0); exitCode(err) != exitUsage {
		t.Errorf("--http nonsense: %v, want a usage error", err)
	}

	// The health thresholds: a bad value is a one-line usage error naming the flag, on both
	// commands, before anything connects or starts.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--health-min-samples", "0"}, "--health-min-samples 0"},
		{[]string{"--health-window", "1m", "--health-bucket", "2m"}, "--health-bucket 2m0s"},
		{[]string{"--health-degraded-error-rate", "1.5"}, "--health-degraded-error-rate 1.5"},
		{[]string{"--health-unhealthy-error-rate", "0.1"}, "--health-unhealthy-error-rate 0.1"},
		{[]string{"--health-unhealthy-p95", "1s"}, "--health-unhealthy-p95 1s"},
		{[]string{"--health-pause-for", "0s"}, "--health-pause-for 0s"},
		{[]string{"--health-max-pause", "1s"}, "--health-max-pause 1s"},
	} {
		for _, cmd := range [][]string{{"worker", "--nats", "nats://127.0.0.1:1"}, {"dev", "--data", t.TempDir(), "--http", ""}} {
			r := runCLI(t, ctx, "", append(cmd, c.args...)...)
			if r.code != exitUsage || !strings.Contains(r.msg(), c.flag) || strings.Contains(r.msg(), "\n") {
				t.Errorf("jetflow %s %v: exit %d %q, want a one-line usage error naming %s", cmd[0], c.args, r.code, r.msg(), c.flag)
			}
		}
	}

	// End to end: with --health-min-samples 1 (the default is 10) one dead step makes the
	// exec type unhealthy, and the worker's /api/health says so (--health-bucket 100ms: the
	// monitor judges at once).
	env := newEnv(t)
	env.apply()
	base := workerWithLogs(t, env, "--http", "127.0.0.1:0", "--health-min-samples", "1", "--health-bucket", "100ms")
	if r := env.cli("start", "broken"); r.code != 0 {
		t.Fatalf("start broken: %s", r)
	}
	var health []struct{ Scope, Name, Status string }
	natstest.Eventually(t, 30*time.Second, func() bool {
		health = nil
		getJSONTo(t, base+"/api/health", &health)
		for _, h := range health {
			if h.Scope == string(metrics.ScopeType) && h.Name == "exec" {
				return h.Status == metrics.Unhealthy.String()
			}
		}
		return false
	}, "with --health-min-samples 1 the exec type never turned unhealthy: %+v", &health)
}

// dashboardLine is the worker's log line that says where its HTTP server listens.
var dashboardLine = regexp.MustCompile(`msg="dashboard listening" url=(\S+)`)

// workerWithLogs runs `jetflow worker` in-process on e's server with the given flags (which
// must include --http) until the test ends, and returns its dashboard's URL, read from its
// log, without the trailing slash.
func workerWithLogs(t *testing.T, e *testEnv, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan error, 1)
	args := append(append([]string{"worker", "--drain-timeout", "5s"}, extra...), e.flags()...)
	go func() { done <- run(ctx, args, strings.NewReader(""), out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v\n%s", err, out)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop within 30 s of its context ending\n%s", out)
		}
	})
	var url string
	natstest.Eventually(t, 30*time.Second, func() bool {
		if m := dashboardLine.FindStringSubmatch(out.String()); m != nil {
			url = strings.TrimSuffix(m[1], "/")
		}
		return url != ""
	}, "the worker logged no dashboard URL:\n%s", out)
	return url
}

// getJSONTo GETs url and decodes its JSON body into v, failing the test on any error.
func getJSONTo(t *testing.T, url string, v any) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// fakeActuator records the calls the health monitor passes on.
type fakeActuator struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeActuator) SetTypeConcurrency(typ string, n int) { f.add("set " + typ) }
func (f *fakeActuator) PauseType(typ string, _ time.Time)    { f.add("pause " + typ) }
func (f *fakeActuator) ResumeType(typ string)                { f.add("resume " + typ) }
func (f *fakeActuator) add(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

// TestLateActuator checks that health actions reach a worker that can act, and are logged
// for one that cannot.
func TestLateActuator(t *testing.T) {
	t.Parallel()
	out := &lockedBuffer{}
	a := &app{stdout: out, stderr: out}
	l := &lateActuator{log: a.logger()}
	l.PauseType("http", time.Now())
	if !strings.Contains(out.String(), "cannot pause") {
		t.Errorf("no log of the action: %q", out.String())
	}
	f := &fakeActuator{}
	l.set(f)
	l.SetTypeConcurrency("http", 2)
	l.PauseType("http", time.Now())
	l.ResumeType("http")
	if got := strings.Join(f.calls, ","); got != "set http,pause http,resume http" {
		t.Errorf("calls %q", got)
	}
}
