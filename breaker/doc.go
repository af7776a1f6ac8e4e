// Package breaker will hold per-worker circuit breakers (sony/gobreaker/v2) with the trip
// shared through the breakers bucket, and the consumer pause that goes with it. Until then the
// worker admits every call (DESIGN.md step 3 is a pass-through).
package breaker
