// Package kvwatch follows a JetStream KV watch for as long as a context lives, opening it
// again after a failure: the watches that keep workers' shared state (breaker trips, worker
// presence, run cancels) must outlast reconnects and server restarts.
package kvwatch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retry is how long Follow waits before opening a watch again after open failed.
const Retry = time.Second

// Follow calls each with every update of the watch open returns, until ctx ends. A nil
// entry marks the end of the values present when the watch opened, as in jetstream. When
// open fails or the watch ends, Follow opens it again after Retry.
func Follow(ctx context.Context, open func(context.Context) (jetstream.KeyWatcher, error), each func(jetstream.KeyValueEntry)) {
	for ctx.Err() == nil {
		w, err := open(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(Retry):
				continue
			}
		}
		drain(ctx, w, each)
		_ = w.Stop()
	}
}

// drain passes the watch's updates to each until the watch ends or ctx does. It does not
// wait for the watch to close its channel once ctx ends: over a closed connection it never
// does (its unsubscribe fails), and the worker's shutdown would wait for ever.
func drain(ctx context.Context, w jetstream.KeyWatcher, each func(jetstream.KeyValueEntry)) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			each(e)
		}
	}
}

// Scan calls fn with the current value of every key of kv that matches one of filters (every
// key when there are none; deleted keys are skipped), and returns once all were seen, or with
// fn's first error.
func Scan(ctx context.Context, kv jetstream.KeyValue, filters []string, fn func(jetstream.KeyValueEntry) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if len(filters) == 0 {
		filters = []string{jetstream.AllKeys}
	}
	// WatchFiltered rewrites the slice it is given: pass a copy.
	w, err := kv.WatchFiltered(ctx, slices.Clone(filters), jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read %s: the watch stopped", kv.Bucket())
			}
			if e == nil { // the end of the current values
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// ReadNow returns cfg for an ordered consumer that is read with Fetch, FetchNoWait or Next
// (to read a stream's messages now, not to follow it). Each of those calls recreates the
// consumer first, and jetstream retries a failed recreation for ever by default, without
// a context: with the server gone, the call (and a worker waiting for it to stop) would
// hang. ReadNow makes it try once; the call then returns the error.
func ReadNow(cfg jetstream.OrderedConsumerConfig) jetstream.OrderedConsumerConfig {
	cfg.MaxResetAttempts = 1
	return cfg
}
