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
}

// register adds --http (default def; empty turns the server off), --admin-token and
// --show-payloads to cmd.
func (h *httpFlags) register(cmd *cobra.Command, def string) {
	fs := cmd.Flags()
	fs.StringVar(&h.addr, "http", def, "serve /metrics, /healthz, /readyz, the JSON API and the dashboard on this address (empty: off)")
	fs.StringVar(&h.adminToken, "admin-token", env("JETFLOW_ADMIN_TOKEN", ""),
		"bearer token that replay, cancel and purge from the dashboard or API need (env JETFLOW_ADMIN_TOKEN; none: read-only)")
	fs.BoolVar(&h.showPayloads, "show-payloads", false, "show inputs, outputs and whole error texts in the dashboard and API")
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
	health, err := metrics.NewHealth(reg, act, metrics.HealthConfig{Concurrency: concurrency, Logger: log})
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
