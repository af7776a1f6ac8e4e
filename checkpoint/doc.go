// Package checkpoint owns the durable state of runs in JetStream KV: run records, node
// states, joins, progress, cancels and ends in the runs bucket, and the definition registry in
// the workflows bucket. Every write is a compare-and-set (Create when a key must not exist,
// Update at a revision otherwise); there is no blind Put on run keys.
package checkpoint
