package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow-dev/jetflow/workflow"
)

// BrokerCollector is a prometheus.Collector that reads the backlog of every node type's
// consumer and the DLQ depth from the broker at scrape time. Every worker that exports it
// reports the same cluster-wide numbers: aggregate them with max(), not sum().
type BrokerCollector struct {
	js      jetstream.JetStream
	names   workflow.Names
	timeout time.Duration

	pending    *prometheus.Desc
	ackPending *prometheus.Desc
	dlqDepth   *prometheus.Desc
	scrapeErr  *prometheus.Desc
}

// NewBrokerCollector returns a collector reading through js with at most timeout per scrape
// (0: 2 s). Register it yourself, or let New do it (Options.JetStream).
func NewBrokerCollector(js jetstream.JetStream, names workflow.Names, timeout time.Duration) *BrokerCollector {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &BrokerCollector{
		js: js, names: names, timeout: timeout,
		pending: prometheus.NewDesc("jetflow_consumer_pending_messages",
			"Steps waiting in the steps stream for a node type's consumer (read at scrape time).", []string{"consumer"}, nil),
		ackPending: prometheus.NewDesc("jetflow_consumer_ack_pending_messages",
			"Steps delivered to workers and not yet acknowledged, per consumer (read at scrape time).", []string{"consumer"}, nil),
		dlqDepth: prometheus.NewDesc("jetflow_dlq_depth_messages",
			"Entries in the DLQ stream (read at scrape time).", nil, nil),
		scrapeErr: prometheus.NewDesc("jetflow_broker_scrape_errors",
			"1 when the last scrape could not read the broker (the series above are then missing).", nil, nil),
	}
}

// Describe sends the descriptors of the collector's series.
func (c *BrokerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.dlqDepth
	ch <- c.scrapeErr
}

// Collect reads the broker and sends the current values. A broker that does not answer
// within the timeout leaves the series out and sets jetflow_broker_scrape_errors to 1: a
// scrape never hangs on NATS.
func (c *BrokerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	failed := 0.0
	backlog, err := ReadBacklog(ctx, c.js, c.names)
	if err != nil {
		failed = 1
	}
	for _, b := range backlog {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending), b.Consumer)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(b.AckPending), b.Consumer)
	}
	if depth, err := ReadDLQDepth(ctx, c.js, c.names); err == nil {
		ch <- prometheus.MustNewConstMetric(c.dlqDepth, prometheus.GaugeValue, float64(depth))
	} else {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErr, prometheus.GaugeValue, failed)
}

// Backlog is one node type's consumer as the broker sees it.
type Backlog struct {
	// Type is the node type; Consumer its durable consumer's name.
	Type     string `json:"type"`
	Consumer string `json:"consumer"`
	// Pending is how many steps wait to be delivered.
	Pending uint64 `json:"pending"`
	// AckPending is how many were delivered and not yet acknowledged.
	AckPending int `json:"ack_pending"`
	// Delivered counts deliveries since the consumer was created (redeliveries included).
	Delivered uint64 `json:"delivered"`
	// Paused says the consumer is paused (a breaker of scope "type" is open).
	Paused bool `json:"paused,omitempty"`
	// PauseUntil is when a pause ends.
	PauseUntil *time.Time `json:"pause_until,omitempty"`
}

// ReadBacklog lists the consumers of the steps stream, sorted by name.
func ReadBacklog(ctx context.Context, js jetstream.JetStream, names workflow.Names) ([]Backlog, error) {
	s, err := js.Stream(ctx, names.StepsStream())
	if err != nil {
		return nil, err
	}
	prefix := names.Consumer("")
	var out []Backlog
	l := s.ListConsumers(ctx)
	for info := range l.Info() {
		b := Backlog{Type: strings.TrimPrefix(info.Name, prefix), Consumer: info.Name, Pending: info.NumPending,
			AckPending: info.NumAckPending, Delivered: info.Delivered.Consumer, Paused: info.Paused}
		if info.Paused && info.Config.PauseUntil != nil {
			t := *info.Config.PauseUntil
			b.PauseUntil = &t
		}
		out = append(out, b)
	}
	if err := l.Err(); err != nil {
		return out, err
	}
	sortBy(out, func(b Backlog) string { return b.Consumer })
	return out, nil
}

// ReadDLQDepth returns how many entries the DLQ stream holds.
func ReadDLQDepth(ctx context.Context, js jetstream.JetStream, names workflow.Names) (uint64, error) {
	s, err := js.Stream(ctx, names.DLQStream())
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}
