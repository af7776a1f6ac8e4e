// Package ts holds the Go test of the TypeScript service in this directory (service.js): it
// runs the service with node against a real NATS server and a jetflow worker. The service
// itself is JavaScript; `npm ci && node service.js` runs it.
package ts
