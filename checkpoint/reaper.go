package checkpoint

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of ReaperConfig.
const (
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultReaperInterval = time.Hour
)

// LeaseKey is the key in the runs bucket of the reaper's cluster-wide lease.
const LeaseKey = "reaper.lease"

// ErrLeaseHeld means another reaper holds the lease: it sweeps, this one does not.
var ErrLeaseHeld = errors.New("checkpoint: another reaper holds the lease")

// ReaperConfig tunes a Reaper. Zero fields take the defaults.
type ReaperConfig struct {
	// Retention is how long after its end a run's keys are kept (default 7 days).
	Retention time.Duration
	// Interval is how often Run sweeps, and how long one sweep's lease lasts (default 1 h).
	Interval time.Duration
	// Clock tells the time (default time.Now); tests move it forward.
	Clock func() time.Time
	// Owner names this reaper in the lease (default host-pid-random).
	Owner string
	// Logger receives what Run does (default: discard).
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields filled in.
func (c ReaperConfig) WithDefaults() ReaperConfig {
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	c.Interval = cmp.Or(c.Interval, DefaultReaperInterval)
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.Owner = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "reaper"), os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func (c ReaperConfig) validate() error {
	switch {
	case c.Retention < 0:
		return errors.New("checkpoint: ReaperConfig.Retention must be positive")
	case c.Interval < 0:
		return errors.New("checkpoint: ReaperConfig.Interval must be positive")
	}
	return nil
}

// Reaper purges finished runs from the runs bucket a retention after their end (DESIGN.md
// "Names on the broker"), skipping runs that still have DLQ entries. Any number of workers may
// run one: a lease key lets one sweep at a time, cluster-wide.
type Reaper struct {
	js    jetstream.JetStream
	store *Store
	names workflow.Names
	cfg   ReaperConfig
	err   error // a bad config, returned by Run and Sweep
}

// NewReaper returns a reaper of the runs in store; js reads the DLQ and steps streams.
func NewReaper(js jetstream.JetStream, store *Store, names workflow.Names, cfg ReaperConfig) *Reaper {
	err := cfg.validate()
	return &Reaper{js: js, store: store, names: names, cfg: cfg.WithDefaults(), err: err}
}

// lease is the value of LeaseKey.
type lease struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// Run sweeps now and then every Interval until ctx ends, then gives up the lease. A failed
// sweep is logged and tried again at the next tick; Run returns nil when ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	if r.err != nil {
		return r.err
	}
	log := r.cfg.Logger
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	defer r.release()
	for {
		n, err := r.Sweep(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseHeld):
			log.Debug("reaper: another worker sweeps this interval")
		case err != nil:
			log.Warn("reaper: sweep failed; trying again at the next interval", "err", err)
		case n > 0:
			log.Info("reaper: purged finished runs", "runs", n, "retention", r.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep purges, once, every key of each run that ended at least Retention ago and has no DLQ
// entry left, and reports how many runs it purged. ErrLeaseHeld if another reaper holds the
// lease. A run's end is purged last, so a sweep cut short is finished by the next one.
func (r *Reaper) Sweep(ctx context.Context) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if _, err := r.acquire(ctx); err != nil {
		return 0, err
	}
	inDLQ, err := r.dlqRuns(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := r.cfg.Clock().Add(-r.cfg.Retention)
	type due struct {
		id        string
		cancelled bool
	}
	var runs []due
	endPrefix := workflow.EndKey("")
	err = r.store.scan(ctx, []string{workflow.EndKey("*")}, func(e jetstream.KeyValueEntry) error {
		id := strings.TrimPrefix(e.Key(), endPrefix)
		var end End
		if err := json.Unmarshal(e.Value(), &end); err != nil || end.At.After(cutoff) || inDLQ[id] {
			return nil
		}
		runs = append(runs, due{id: id, cancelled: end.Status == EndCancelled})
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(runs) == 0 {
		return 0, nil
	}
	purgeOpts := r.store.purgeOpts(ctx)
	renewed := time.Now()
	for i, run := range runs {
		if time.Since(renewed) > r.cfg.Interval/2 {
			// A long sweep keeps its lease.
			if _, err := r.acquire(ctx); err != nil {
				return i, err
			}
			renewed = time.Now()
		}
		if err := r.purgeRun(ctx, run.id, run.cancelled, purgeOpts); err != nil {
			return i, err
		}
	}
	return len(runs), nil
}

// purgeRun purges every key of a run, its end last. For a cancelled run it also drops the
// schedules of steps it had parked, which would otherwise wait in the steps stream.
func (r *Reaper) purgeRun(ctx context.Context, id string, cancelled bool, opts []jetstream.KVDeleteOpt) error {
	if cancelled {
		s, err := r.js.Stream(ctx, r.names.StepsStream())
		if err == nil {
			subject := strings.TrimSuffix(r.names.SchedSubject(id, "_", 0), "._.0") + ".>"
			err = s.Purge(ctx, jetstream.WithPurgeSubject(subject))
		}
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("purge schedules of run %s: %w", id, err)
		}
	}
	keys, err := r.keysOf(ctx, workflow.RunKey(id), workflow.NodeKey(id, "*"), workflow.JoinKey(id, "*"),
		workflow.SinksKey(id), workflow.ProgressKey(id, "*"), workflow.CancelKey(id))
	if err != nil {
		return fmt.Errorf("list keys of run %s: %w", id, err)
	}
	keys = append(keys, workflow.EndKey(id))
	for _, k := range keys {
		if err := r.store.runs.Purge(ctx, k, opts...); err != nil {
			return fmt.Errorf("purge %s: %w", k, err)
		}
	}
	return nil
}

// keysOf lists the keys of the runs bucket that match filters, deleted ones included: a
// delete marker (a dropped progress key, an end a replay deleted) is kept for ever unless it
// is purged, and ListKeys skips it.
func (r *Reaper) keysOf(ctx context.Context, filters ...string) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := r.store.runs.WatchFiltered(ctx, filters, jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var keys []string
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch stopped")
			}
			if e == nil {
				return keys, nil
			}
			keys = append(keys, e.Key())
		}
	}
}

// acquire takes or renews the lease until now + Interval and returns its revision.
func (r *Reaper) acquire(ctx context.Context) (uint64, error) {
	for range MaxCASRetries {
		now := r.cfg.Clock()
		var cur lease
		rev, err := get(ctx, r.store.runs, LeaseKey, &cur)
		switch {
		case errors.Is(err, ErrNotFound):
			rev = 0
		case err != nil:
			return 0, err
		case cur.Owner != r.cfg.Owner && now.Before(cur.Until):
			return 0, fmt.Errorf("%w (%s, until %s)", ErrLeaseHeld, cur.Owner, cur.Until.UTC().Format(time.RFC3339))
		}
		rev, err = put(ctx, r.store.runs, LeaseKey, &lease{Owner: r.cfg.Owner, Until: now.Add(r.cfg.Interval).UTC()}, rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return rev, err
	}
	return 0, fmt.Errorf("%w: %s after %d tries", ErrConflict, LeaseKey, MaxCASRetries)
}

// release gives the lease up if this reaper holds it, so another can take over at once.
func (r *Reaper) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cur lease
	rev, err := get(ctx, r.store.runs, LeaseKey, &cur)
	if err != nil || cur.Owner != r.cfg.Owner {
		return
	}
	cur.Until = r.cfg.Clock().UTC()
	_, _ = put(ctx, r.store.runs, LeaseKey, &cur, rev)
}

// dlqRuns returns the set of run IDs that have at least one DLQ entry, reading the DLQ
// stream's headers once.
func (r *Reaper) dlqRuns(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	s, err := r.js.Stream(ctx, r.names.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", r.names.DLQStream(), err)
	}
	if s.CachedInfo().State.Msgs == 0 {
		return out, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.names.DLQStream(), err)
	}
	if info := c.CachedInfo(); info != nil && info.NumPending == 0 {
		return out, nil
	}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", r.names.DLQStream(), err)
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			n++
			out[runOf(msg.Headers(), msg.Data())] = true
			if meta, err := msg.Metadata(); err == nil {
				pending = meta.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("read %s: %w", r.names.DLQStream(), err)
		}
		if n == 0 {
			// Nothing ready at once: wait a moment for one more before calling it the end.
			msg, err := c.Next(jetstream.FetchMaxWait(time.Second))
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", r.names.DLQStream(), err)
			}
			out[runOf(msg.Headers(), msg.Data())] = true
			if meta, err := msg.Metadata(); err == nil {
				pending = meta.NumPending
			}
		}
		if pending == 0 {
			break
		}
	}
	delete(out, "")
	return out, nil
}

// runOf is the run a DLQ message belongs to: its Jetflow-Run header, else the body's run_id.
func runOf(h nats.Header, body []byte) string {
	if run := h.Get(workflow.HeaderRun); run != "" {
		return run
	}
	var env struct {
		RunID string `json:"run_id"`
	}
	if len(body) > 0 && json.Unmarshal(body, &env) == nil {
		return env.RunID
	}
	return ""
}
