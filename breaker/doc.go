// Package breaker keeps each worker's circuit breakers (sony/gobreaker/v2, in memory, about
// 150 ns a call) and shares what matters across workers through the breakers bucket: when a
// worker's breaker for a key opens, it writes the trip {open_until} with compare-and-set, and
// every worker watching the bucket treats the key as open until then. After open_until the
// half-open probes are claimed cluster-wide through the same record, so a recovering
// dependency sees the probe count, not one probe per worker. A Retry-After cool-down is the
// same record. The closed path makes no KV call.
package breaker
