// Package kvwatch follows a JetStream KV watch for as long as a context lives, opening it
// again after a failure: the watches that keep workers' shared state (breaker trips, worker
// presence, run cancels) must outlast reconnects and server restarts.
package kvwatch

import (
	"context"
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
