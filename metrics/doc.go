// Package metrics owns what operators see of jetflow: the Prometheus series (Metrics, which a
// worker calls through consumer.Observer, plus a collector
// that reads backlog and DLQ depth from the broker at scrape time), the health monitor that
// acts on node types that keep failing (Health), the cluster-wide views read from the broker
// (ReadOverview, Activity), and the HTTP server (Server): /metrics, /healthz, /readyz, the
// JSON API under /api/, Server-Sent Events at /events, and the dashboard at /.
//
// Nothing here uses the default Prometheus registry or a global logger: both are injected.
// No series is labelled with a run ID.
package metrics
