package consumer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// dlq waits until the DLQ holds n entries and returns them.
func (f *fixture) dlq(n int) []*dlq.Entry {
	f.t.Helper()
	var entries []*dlq.Entry
	natstest.Eventually(f.t, 10*time.Second, func() bool {
		var err error
		entries, err = dlq.List(context.Background(), f.js, f.names, dlq.Filter{})
		return err == nil && len(entries) >= n
	}, "DLQ did not reach %d entries", n)
	if len(entries) != n {
		f.t.Fatalf("DLQ has %d entries, want %d", len(entries), n)
	}
	return entries
}

// pending returns the steps of a type's consumer not yet acknowledged or delivered.
func (f *fixture) pending(typ string) uint64 {
	f.t.Helper()
	c, err := f.js.Consumer(context.Background(), f.names.StepsStream(), f.names.Consumer(typ))
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return info.NumPending + uint64(info.NumAckPending)
}

func jetstreamMsgID(id string) jetstream.PublishOpt { return jetstream.WithMsgID(id) }

func listDLQ(f *fixture) ([]*dlq.Entry, error) {
	return dlq.List(context.Background(), f.js, f.names, dlq.Filter{})
}
