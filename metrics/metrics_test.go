package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
)

// find returns the gathered series name with exactly the labels given, or nil.
func find(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// count returns how many series name has.
func count(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// value returns a counter's or gauge's value, or a histogram's sample count; -1 when absent.
func value(t *testing.T, g prometheus.Gatherer, name string, kv ...string) float64 {
	t.Helper()
	labels := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		labels[kv[i]] = kv[i+1]
	}
	m := find(t, g, name, labels)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestMetricsAfterKnownRuns runs a success, a run retried twice and a run that dead-letters
// through a real worker observed by Metrics, and checks every count.
func TestMetricsAfterKnownRuns(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.worker()
	okRun, flakyRun, permRun, hangRun := f.start("ok"), f.start("flaky"), f.start("perm"), f.start("hang")
	f.waitEnd(okRun, checkpoint.EndCompleted)
	f.waitEnd(flakyRun, checkpoint.EndCompleted)
	f.waitEnd(permRun, checkpoint.EndFailed)
	// The worker counts starts itself (the test's producer reports nothing); a cancelled
	// run is counted by the leading worker when it sees the cancel.
	natstest.Eventually(t, 10*time.Second, func() bool {
		return value(t, f.reg, "jetflow_runs_started_total", "workflow", "hang") == 1
	}, "the hang run's start was not counted")
	if _, err := f.store.Cancel(context.Background(), hangRun, "test"); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		name string
		kv   []string
		v    float64
	}{
		{"jetflow_runs_started_total", []string{"workflow", "ok"}, 1},
		{"jetflow_runs_started_total", []string{"workflow", "flaky"}, 1},
		{"jetflow_runs_started_total", []string{"workflow", "perm"}, 1},
		{"jetflow_runs_finished_total", []string{"workflow", "ok", "status", "completed"}, 1},
		{"jetflow_runs_finished_total", []string{"workflow", "flaky", "status", "completed"}, 1},
		{"jetflow_runs_finished_total", []string{"workflow", "perm", "status", "failed"}, 1},
		{"jetflow_runs_finished_total", []string{"workflow", "hang", "status", "cancelled"}, 1},
		{"jetflow_run_duration_seconds", []string{"workflow", "ok", "status", "completed"}, 1},
		{"jetflow_steps_total", []string{"workflow", "ok", "node", "a", "outcome", "succeeded"}, 1},
		{"jetflow_steps_total", []string{"workflow", "ok", "node", "b", "outcome", "succeeded"}, 1},
		{"jetflow_steps_total", []string{"workflow", "flaky", "node", "x", "outcome", "retried"}, 2},
		{"jetflow_steps_total", []string{"workflow", "flaky", "node", "x", "outcome", "succeeded"}, 1},
		{"jetflow_steps_total", []string{"workflow", "perm", "node", "p", "outcome", "dead_lettered"}, 1},
		{"jetflow_step_duration_seconds", []string{"workflow", "flaky", "node", "x", "outcome", "retried"}, 2},
		{"jetflow_step_schedule_to_start_seconds", []string{"node_type", typeOK}, 2},
		{"jetflow_step_schedule_to_start_seconds", []string{"node_type", typeFlaky}, 3},
		{"jetflow_steps_in_flight", nil, 0},
		{"jetflow_dlq_depth_messages", nil, 1},
		{"jetflow_consumer_pending_messages", []string{"consumer", f.names.Consumer(typeOK)}, 0},
		{"jetflow_consumer_ack_pending_messages", []string{"consumer", f.names.Consumer(typeOK)}, 0},
		{"jetflow_broker_scrape_errors", nil, 0},
	}
	// The worker counts an outcome just after writing it: wait for the last ones.
	for _, w := range want {
		var got float64
		natstest.Eventually(t, 10*time.Second, func() bool {
			got = value(t, f.reg, w.name, w.kv...)
			return got == w.v
		}, "%s%v = %v, want %v", w.name, w.kv, got, w.v)
	}
	// Nothing else happened: no run of q (its parent died), no rerun, no abandoned handler.
	if v := value(t, f.reg, "jetflow_steps_total", "workflow", "perm", "node", "q", "outcome", "succeeded"); v != -1 {
		t.Errorf("node q ran (%v) although its parent is dead", v)
	}
	for _, name := range []string{"jetflow_step_reruns_total", "jetflow_handler_abandoned_total"} {
		if n := count(t, f.reg, name); n != 0 {
			t.Errorf("%s has %d series, want none", name, n)
		}
	}
	if m := find(t, f.reg, "jetflow_build_info", map[string]string{"version": "test", "go_version": goVersion()}); m == nil || m.Gauge.GetValue() != 1 {
		t.Errorf("jetflow_build_info{version=test} missing")
	}
	// No series carries a run ID.
	mfs, _ := f.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, id := range []string{okRun, flakyRun, permRun} {
					if strings.Contains(l.GetValue(), id) {
						t.Errorf("%s has a run ID in label %s", mf.GetName(), l.GetName())
					}
				}
			}
		}
	}
}

// TestBreakerSeries checks the breaker gauge and transition counter.
func TestBreakerSeries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Options{})
	m.BreakerState("api.example.com", breaker.Closed) // first sighting of a closed key: no transition
	m.BreakerState("api.example.com", breaker.Open)
	m.BreakerState("api.example.com", breaker.Open) // a re-trip seen again: no change
	m.BreakerState("api.example.com", breaker.HalfOpen)
	m.BreakerState("api.example.com", breaker.Closed)
	for _, c := range []struct {
		to   string
		want float64
	}{{"open", 1}, {"half-open", 1}, {"closed", 1}} {
		if got := value(t, reg, "jetflow_breaker_transitions_total", "key", "api.example.com", "to", c.to); got != c.want {
			t.Errorf("transitions to %s = %v, want %v", c.to, got, c.want)
		}
	}
	if got := value(t, reg, "jetflow_breaker_state", "key", "api.example.com"); got != 0 {
		t.Errorf("state = %v, want 0 (closed)", got)
	}
	m.BreakerState("api.example.com", breaker.Open)
	if got := value(t, reg, "jetflow_breaker_state", "key", "api.example.com"); got != 2 {
		t.Errorf("state = %v, want 2 (open)", got)
	}
}

// TestScrapeWithoutNATS checks that a scrape does not hang when NATS is gone: the broker
// series are left out and jetflow_broker_scrape_errors says so.
func TestScrapeWithoutNATS(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 2*time.Second)
	_, js := srv.Connect(t)
	reg := prometheus.NewRegistry()
	metrics.New(reg, metrics.Options{JetStream: js, Names: names, ScrapeTimeout: 500 * time.Millisecond})
	if got := value(t, reg, "jetflow_dlq_depth_messages"); got != 0 {
		t.Fatalf("DLQ depth = %v, want 0", got)
	}
	srv.Stop()
	if got := value(t, reg, "jetflow_broker_scrape_errors"); got != 1 {
		t.Errorf("scrape errors = %v, want 1", got)
	}
	if got := value(t, reg, "jetflow_dlq_depth_messages"); got != -1 {
		t.Errorf("DLQ depth = %v without NATS, want it left out", got)
	}
}
