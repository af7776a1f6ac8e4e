// Package metrics will hold jetflow's Prometheus collectors, the health monitor and the HTTP
// server (/metrics, /healthz, /readyz, /api/…, the dashboard). It is empty until the
// observability issue.
package metrics
