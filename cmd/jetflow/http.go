package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/metrics"
)

// httpFlags are the observability flags of `dev` and `worker`.
type httpFlags struct {
	addr         string
	adminToken   string
	showPayloads bool
	health       healthFlags
}

// register adds --http (default def; empty turns the server off), --admin-token,
// --show-payloads and the --health-* thresholds to cmd.
func (h *httpFlags) register(cmd *cobra.Command, def string) {
	fs := cmd.Flags()
	fs.StringVar(&h.addr, "http", def, "serve /metrics, /healthz, /readyz, the JSON API and the dashboard on this address (empty: off)")
	fs.StringVar(&h.adminToken, "admin-token", env("JETFLOW_ADMIN_TOKEN", ""),
		"bearer token that replay, cancel and purge from the dashboard or API need (env JETFLOW_ADMIN_TOKEN; none: read-only)")
	fs.BoolVar(&h.showPayloads, "show-payloads", false, "show inputs, outputs and whole error texts in the dashboard and API")
	h.health.register(cmd)
}

// healthFlags are the health monitor's thresholds, one flag per metrics.HealthConfig field.
// The zero value means every default (metrics.HealthConfig.WithDefaults).
type healthFlags struct {
	window, bucket                        time.Duration
	minSamples                            int
	degradedErrorRate, unhealthyErrorRate float64
	degradedP95, unhealthyP95             time.Duration
	pauseFor, maxPause                    time.Duration
}

// register adds the --health-* flags to cmd, with the library's defaults.
func (h *healthFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.DurationVar(&h.window, "health-window", metrics.DefaultHealthWindow, "health monitor: judge each node type and breaker key over this much recent history")
	fs.DurationVar(&h.bucket, "health-bucket", metrics.DefaultHealthBucket, "health monitor: judge this often (the window's resolution)")
	fs.IntVar(&h.minSamples, "health-min-samples", metrics.DefaultMinSamples, "health monitor: judge only with at least this many outcomes in the window (fewer: healthy)")
	fs.Float64Var(&h.degradedErrorRate, "health-degraded-error-rate", metrics.DefaultDegradedErrorRate, "health monitor: degraded from this error rate (0..1): the type runs at half concurrency")
	fs.Float64Var(&h.unhealthyErrorRate, "health-unhealthy-error-rate", metrics.DefaultUnhealthyErrorRate, "health monitor: unhealthy from this error rate (0..1): the type is paused")
	fs.DurationVar(&h.degradedP95, "health-degraded-p95", metrics.DefaultDegradedP95, "health monitor: degraded from this p95 latency")
	fs.DurationVar(&h.unhealthyP95, "health-unhealthy-p95", metrics.DefaultUnhealthyP95, "health monitor: unhealthy from this p95 latency")
	fs.DurationVar(&h.pauseFor, "health-pause-for", metrics.DefaultPauseFor, "health monitor: pause an unhealthy type this long at first")
	fs.DurationVar(&h.maxPause, "health-max-pause", metrics.DefaultMaxPause, "health monitor: longest pause of a type that stays unhealthy (each pause doubles)")
}

// validate checks the flags as given (zero is not "the default" on the command line: it is
// refused), naming the flag and the value in one line.
func (h healthFlags) validate() error {
	bad := func(flag string, v any, want string) error {
		return usageErr(fmt.Errorf("--%s %v: %s", flag, v, want))
	}
	switch {
	case h.window <= 0:
		return bad("health-window", h.window, "must be positive (e.g. 5m)")
	case h.bucket <= 0 || h.bucket > h.window:
		return bad("health-bucket", h.bucket, "must be positive and at most --health-window ("+h.window.String()+")")
	case h.minSamples < 1:
		return bad("health-min-samples", h.minSamples, "must be at least 1")
	case !(h.degradedErrorRate > 0 && h.degradedErrorRate <= 1):
		return bad("health-degraded-error-rate", h.degradedErrorRate, "must be a fraction above 0 and at most 1 (0.2 is 20 %)")
	case !(h.unhealthyErrorRate >= h.degradedErrorRate && h.unhealthyErrorRate <= 1):
		return bad("health-unhealthy-error-rate", h.unhealthyErrorRate, fmt.Sprintf("must be between --health-degraded-error-rate (%v) and 1", h.degradedErrorRate))
	case h.degradedP95 <= 0:
		return bad("health-degraded-p95", h.degradedP95, "must be positive (e.g. 10s)")
	case h.unhealthyP95 < h.degradedP95:
		return bad("health-unhealthy-p95", h.unhealthyP95, "must be at least --health-degraded-p95 ("+h.degradedP95.String()+")")
	case h.pauseFor <= 0:
		return bad("health-pause-for", h.pauseFor, "must be positive (e.g. 30s)")
	case h.maxPause < h.pauseFor:
		return bad("health-max-pause", h.maxPause, "must be at least --health-pause-for ("+h.pauseFor.String()+")")
	}
	return nil
}

// config is the metrics.HealthConfig of these flags, for a worker running concurrency steps
// of each type.
func (h healthFlags) config(concurrency int, log *slog.Logger) metrics.HealthConfig {
	return metrics.HealthConfig{
		Window: h.window, Bucket: h.bucket, MinSamples: h.minSamples,
		DegradedErrorRate: h.degradedErrorRate, UnhealthyErrorRate: h.unhealthyErrorRate,
		DegradedP95: h.degradedP95, UnhealthyP95: h.unhealthyP95,
		PauseFor: h.pauseFor, MaxPause: h.maxPause,
		Concurrency: concurrency, Logger: log,
	}
}

// obs is a worker process's metrics, health monitor and HTTP server. A nil *obs is valid and
// observes nothing.
type obs struct {
	metrics *metrics.Metrics
	health  *metrics.Health
	act     *lateActuator
	server  *metrics.Server // nil without --http
}

// newObs builds the metrics and the health monitor of a worker running concurrency steps of
// each type and, with --http, binds the HTTP server (trying portSearch following ports when
// the port is taken). draining reports that the worker shuts down (/readyz then says 503).
func (a *app) newObs(c *conn, h httpFlags, concurrency int, draining func() bool, portSearch int) (*obs, error) {
	log := a.logger()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	act := &lateActuator{log: log}
	health, err := metrics.NewHealth(reg, act, h.health.config(concurrency, log))
	if err != nil {
		return nil, usageErr(err)
	}
	m := metrics.New(reg, metrics.Options{Version: version, JetStream: c.js, Names: c.names, Health: health})
	o := &obs{metrics: m, health: health, act: act}
	if h.addr == "" {
		return o, nil
	}
	srv, err := metrics.NewServer(c.js, c.store, metrics.ServerConfig{
		Addr: h.addr, PortSearch: portSearch, AdminToken: h.adminToken, ShowPayloads: h.showPayloads,
		Names: c.names, Gatherer: reg, Health: health, Draining: draining, Version: version, Logger: log,
	})
	if err != nil {
		return nil, usageErr(fmt.Errorf("--http: %w", err))
	}
	if _, err := srv.Listen(); err != nil {
		return nil, failedErr(fmt.Errorf("--http: %w (choose another address)", err))
	}
	o.server = srv
	return o, nil
}

// observer returns what to set as consumer.Config.Observer (nil: none).
func (o *obs) observer() consumer.Observer {
	if o == nil {
		return nil
	}
	return o.metrics
}

// url returns the dashboard's URL ("" without --http).
func (o *obs) url() string {
	if o == nil || o.server == nil {
		return ""
	}
	return o.server.URL()
}

// attach lets the health monitor act on w, once the worker implements metrics.Actuator.
func (o *obs) attach(w *consumer.Worker) {
	if o != nil {
		o.act.set(w)
	}
}

// start runs the health monitor and the HTTP server until the returned func is called. Call
// it after the worker has drained: the server keeps answering (/readyz 503) while it drains.
func (o *obs) start() (stop func()) {
	if o == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = o.health.Run(ctx) })
	if o.server != nil {
		wg.Go(func() {
			if err := o.server.Run(ctx); err != nil {
				o.act.log.Error("dashboard stopped", "err", err)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// lateActuator hands the health monitor's actions to the worker, which exists only after the
// metrics it reports to. A worker that does not implement metrics.Actuator gets the actions
// logged instead.
type lateActuator struct {
	log *slog.Logger
	mu  sync.Mutex
	act metrics.Actuator
}

func (l *lateActuator) set(w any) {
	a, _ := w.(metrics.Actuator)
	l.mu.Lock()
	l.act = a
	l.mu.Unlock()
}

func (l *lateActuator) get() metrics.Actuator {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.act
}

// SetTypeConcurrency passes the call on to the worker.
func (l *lateActuator) SetTypeConcurrency(typ string, n int) {
	if a := l.get(); a != nil {
		a.SetTypeConcurrency(typ, n)
		return
	}
	l.log.Info("health: the worker cannot change a type's concurrency; not acting", "type", typ, "concurrency", n)
}

// PauseType passes the call on to the worker.
func (l *lateActuator) PauseType(typ string, until time.Time) {
	if a := l.get(); a != nil {
		a.PauseType(typ, until)
		return
	}
	l.log.Info("health: the worker cannot pause a type; not acting", "type", typ, "until", until.Format(time.RFC3339))
}

// ResumeType passes the call on to the worker.
func (l *lateActuator) ResumeType(typ string) {
	if a := l.get(); a != nil {
		a.ResumeType(typ)
	}
}
