package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// PresenceInterval is how often a worker refreshes its presence.
const PresenceInterval = 5 * time.Second

// PresenceTTL is how long a presence counts after its last refresh (three intervals): the
// workers bucket's TTL, after which a crashed worker's record is gone.
const PresenceTTL = jsetup.WorkerPresenceTTL

// live reports whether the worker refreshed its presence within PresenceTTL of now.
func (p Presence) live(now time.Time) bool { return now.Sub(p.Seen) <= PresenceTTL }

// Presence is what a worker says about itself in the workers bucket.
type Presence struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Version  string    `json:"version,omitempty"`
	Types    []string  `json:"types"`
	InFlight int64     `json:"in_flight"`
	Started  time.Time `json:"started"`
	Seen     time.Time `json:"seen"`
}

// presence keeps this worker's record fresh and counts the live workers of each type. It
// watches the bucket, so a worker that joins or leaves changes the counts at once; records
// not refreshed for three intervals (a crashed worker) stop counting, and are forgotten at
// the next refresh: the bucket's TTL removes such a key without a word to watchers, so the
// map would otherwise hold every worker that ever ran.
type presence struct {
	kv      jetstream.KeyValue
	self    Presence
	key     string
	running *atomic.Int64

	mu     sync.RWMutex
	others map[string]Presence // by key
}

// leads reports whether this worker has the lowest ID among the live workers: the one that
// does what must happen once per cluster and has no key of its own to decide it (counting a
// cancelled run's end). While workers join or leave, two may lead for a moment, or none.
func (p *presence) leads() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	now := time.Now()
	for k, o := range p.others {
		if k != p.key && o.live(now) && o.ID < p.self.ID {
			return false
		}
	}
	return true
}

// count returns the live workers that run nodeType (at least 1: this one).
func (p *presence) count(nodeType string) int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := 0
	now := time.Now()
	for _, o := range p.others {
		if o.live(now) && slices.Contains(o.Types, nodeType) {
			n++
		}
	}
	return max(n, 1)
}

// run writes the record every PresenceInterval and watches everyone's; on exit it deletes
// the record so the others' shares grow at once.
func (p *presence) run(ctx context.Context) {
	p.refresh(ctx)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); p.watch(watchCtx) }()
	defer func() { stopWatch(); <-watched }()
	t := time.NewTicker(PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = p.kv.Delete(dctx, p.key)
			cancel()
			return
		case <-t.C:
			p.refresh(ctx)
		}
	}
}

func (p *presence) refresh(ctx context.Context) {
	p.self.InFlight = p.running.Load()
	p.self.Seen = time.Now().UTC()
	if b, err := json.Marshal(&p.self); err == nil {
		_, _ = p.kv.Put(ctx, p.key, b)
	}
	p.mu.Lock()
	p.others[p.key] = p.self
	now := time.Now()
	for k, o := range p.others {
		if !o.live(now) {
			delete(p.others, k)
		}
	}
	p.mu.Unlock()
}

func (p *presence) watch(ctx context.Context) {
	kvwatch.Follow(ctx, func(ctx context.Context) (jetstream.KeyWatcher, error) { return p.kv.WatchAll(ctx) },
		func(e jetstream.KeyValueEntry) {
			if e == nil {
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			var o Presence
			if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &o) == nil {
				p.others[e.Key()] = o
			} else {
				delete(p.others, e.Key())
			}
		})
}

func newPresence(kv jetstream.KeyValue, id, version string, types []string, running *atomic.Int64) *presence {
	host, _ := os.Hostname()
	return &presence{
		kv:      kv,
		key:     breaker.BucketKey(id),
		running: running,
		self: Presence{ID: id, Host: host, PID: os.Getpid(), Version: version, Types: slices.Clone(types),
			Started: time.Now().UTC()},
		others: map[string]Presence{},
	}
}

// LiveWorkers reads the workers bucket and returns the workers whose presence was refreshed
// within PresenceTTL of now (a crashed worker drops out after 15 s), sorted by
// ID. checkpoint.ErrNotSetUp if the bucket is missing.
func LiveWorkers(ctx context.Context, js jetstream.JetStream, names workflow.Names, now time.Time) ([]Presence, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, names.WorkersBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, checkpoint.ErrNotSetUp
	} else if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", names.WorkersBucket(), err)
	}
	out := []Presence{}
	err = kvwatch.Scan(ctx, kv, nil, func(e jetstream.KeyValueEntry) error {
		var p Presence
		if json.Unmarshal(e.Value(), &p) == nil && p.live(now) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Presence) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// MarkUnserved marks the steps of v, a running run, that could run now but whose type no
// live worker serves (checkpoint.RunView.MarkUnserved). It does nothing when the workers
// bucket cannot be read (not set up, or no permission to read it).
func MarkUnserved(ctx context.Context, js jetstream.JetStream, names workflow.Names, v *checkpoint.RunView) {
	if v.Status != checkpoint.RunRunning {
		return
	}
	if served, err := ServedTypes(ctx, js, names); err == nil {
		v.MarkUnserved(func(t string) bool { return served[t] })
	}
}

// ServedTypes returns the node types that some live worker serves.
func ServedTypes(ctx context.Context, js jetstream.JetStream, names workflow.Names) (map[string]bool, error) {
	ws, err := LiveWorkers(ctx, js, names, time.Now())
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, w := range ws {
		for _, t := range w.Types {
			out[t] = true
		}
	}
	return out, nil
}
