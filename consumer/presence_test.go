package consumer

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// known is how many workers' records the presence holds in memory, itself included.
func (p *presence) known() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.others)
}

// TestPresenceForgetsExpiredWorkers: a worker that crashed (its record is never refreshed,
// so the bucket's TTL expires it) drops out of the counts and out of memory, instead of
// staying in the presence map for as long as the worker runs.
func TestPresenceForgetsExpiredWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := f.js.KeyValue(ctx, f.names.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	var running atomic.Int64
	p := newPresence(kv, "w-self", "test", []string{"t"}, &running)
	var wg sync.WaitGroup
	wg.Go(func() { p.run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	gone := Presence{ID: "w-gone", Types: []string{"t"}, Started: time.Now().UTC(), Seen: time.Now().UTC()}
	b, _ := json.Marshal(&gone)
	if _, err := kv.Put(ctx, "w-gone", b); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return p.count("t") == 2 }, "the presence never saw the other worker")
	// w-gone never refreshes: its key expires after PresenceTTL.
	natstest.Eventually(t, PresenceTTL+20*time.Second, func() bool { return p.known() == 1 },
		"the presence still holds %d records well after the crashed worker's key expired", p.known())
	if n := p.count("t"); n != 1 {
		t.Fatalf("count %d after the other worker expired, want 1", n)
	}
}
