package metrics

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of ActivityConfig.
const (
	DefaultActivityWindow = time.Minute
	DefaultActivityIdle   = 2 * time.Minute
)

// ActivityConfig tunes Activity. Zero fields take the defaults.
type ActivityConfig struct {
	// Window is how far back Stats looks (default 1 min).
	Window time.Duration
	// Idle is how long after the last Stats or Sync call Activity stops reading (default
	// 2 min): nobody watching costs the broker nothing.
	Idle time.Duration
	// Logger receives read errors (default: discard).
	Logger *slog.Logger
}

// Activity measures, cluster-wide, the steps that finish: it reads every write of a node
// state in the runs bucket (an ordered consumer on the bucket's stream, starting Window ago)
// while someone asks for Stats, and keeps per-second counts. A done node is a success
// (latency: ended_at − started_at); a dead node, or a node written back to retrying with an
// error, is a failure. It reads the broker only between a Stats call and Idle after the last
// one.
type Activity struct {
	js    jetstream.JetStream
	names workflow.Names
	cfg   ActivityConfig
	log   *slog.Logger

	wake chan struct{}

	mu       sync.Mutex
	win      *window
	skipped  *window       // nodes skipped by control flow (counts only)
	items    *window       // for_each items finished, also counted in win
	parked   *window       // subflow nodes that ended (done or dead), or wait for their child run now
	wanted   time.Time     // last Stats or Sync
	live     bool          // reading now
	caughtUp chan struct{} // closed once the reading session read the history
}

// ActivityStats are the steps finished over the window, cluster-wide.
type ActivityStats struct {
	// Live says Activity is reading the broker (false on the first call after a pause: ask
	// again in a moment).
	Live bool `json:"live"`
	// Window is the span the numbers cover.
	Window time.Duration `json:"window"`
	// Succeeded and Failed count the steps that finished (failed: an attempt failed).
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// StepsPerSec is (Succeeded+Failed)/Window.
	StepsPerSec float64 `json:"steps_per_sec"`
	// FailureRate is Failed/(Succeeded+Failed).
	FailureRate float64 `json:"failure_rate"`
	// P50 and P99 are the latencies of the steps that finished, to within 25 %.
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
	// Skipped counts the nodes control flow skipped (an `if` was false, or every parent was
	// skipped); they are not steps, so not in Succeeded.
	Skipped int `json:"skipped"`
	// Items counts the for_each items that finished (also counted as steps above).
	Items int `json:"items"`
	// Subflows counts the subflow nodes whose child run ended (done or dead), and those
	// waiting for it (a node's latest state is what the window holds of it).
	Subflows int `json:"subflows"`
}

// NewActivity returns an Activity reading through js; call Run.
func NewActivity(js jetstream.JetStream, names workflow.Names, cfg ActivityConfig) *Activity {
	cfg.Window = cmp.Or(cfg.Window, DefaultActivityWindow)
	cfg.Idle = cmp.Or(cfg.Idle, DefaultActivityIdle)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Activity{js: js, names: names, cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1),
		win: newWindow(cfg.Window, time.Second), caughtUp: make(chan struct{}),
		skipped: newWindow(cfg.Window, time.Second), items: newWindow(cfg.Window, time.Second), parked: newWindow(cfg.Window, time.Second)}
}

// want marks Activity as wanted now and wakes Run.
func (a *Activity) want() {
	a.mu.Lock()
	a.wanted = time.Now()
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Stats returns the activity over the window (and keeps Activity reading).
func (a *Activity) Stats() ActivityStats {
	a.want()
	now := time.Now()
	a.mu.Lock()
	s := a.win.stats(now)
	skipped, items, parked := a.skipped.stats(now).Samples, a.items.stats(now).Samples, a.parked.stats(now).Samples
	live := a.live
	a.mu.Unlock()
	out := ActivityStats{Live: live, Window: a.cfg.Window, Succeeded: s.Samples - s.Failed, Failed: s.Failed,
		StepsPerSec: float64(s.Samples) / a.cfg.Window.Seconds(), FailureRate: s.ErrorRate, P50: s.P50, P99: s.P99,
		Skipped: skipped, Items: items, Subflows: parked}
	return out
}

// Sync waits until Activity has read the window's history (Run must be running).
func (a *Activity) Sync(ctx context.Context) error {
	a.want()
	for {
		a.mu.Lock()
		ch, live := a.caughtUp, a.live
		a.mu.Unlock()
		if live {
			select {
			case <-ch:
				return nil
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Run reads node writes while Activity is wanted, until ctx ends.
func (a *Activity) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		a.mu.Lock()
		stale := time.Since(a.wanted) > a.cfg.Idle // a wake left over from the last session
		a.mu.Unlock()
		if !stale {
			a.session(ctx)
		}
	}
}

// session reads from Window ago until Activity is no longer wanted or ctx ends.
func (a *Activity) session(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	caught := make(chan struct{})
	var once sync.Once
	markCaught := func() { once.Do(func() { close(caught) }) }
	a.mu.Lock()
	a.win.reset()
	a.skipped.reset()
	a.items.reset()
	a.parked.reset()
	a.live, a.caughtUp = true, caught
	a.mu.Unlock()
	defer func() {
		markCaught()
		a.mu.Lock()
		a.live = false
		a.mu.Unlock()
	}()

	bucket := a.names.RunsBucket()
	start := time.Now().Add(-a.cfg.Window)
	var cc jetstream.ConsumeContext
	for cc == nil {
		s, err := a.js.Stream(ctx, "KV_"+bucket)
		var c jetstream.Consumer
		if err == nil {
			c, err = s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{"$KV." + bucket + "." + workflow.NodeKey("*", "*"), "$KV." + bucket + ".item.*.*.*"},
				DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
			})
		}
		if err == nil {
			if info := c.CachedInfo(); info != nil && info.NumPending == 0 {
				markCaught()
			}
			cc, err = c.Consume(func(msg jetstream.Msg) {
				a.record(msg)
				if meta, err := msg.Metadata(); err == nil && meta.NumPending == 0 {
					markCaught()
				}
			})
		}
		if err != nil {
			a.log.Debug("activity: cannot read node states", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
	}
	defer cc.Stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.mu.Lock()
			idle := time.Since(a.wanted) > a.cfg.Idle
			a.mu.Unlock()
			if idle {
				return
			}
		}
	}
}

// record counts one node write.
func (a *Activity) record(msg jetstream.Msg) {
	if op := msg.Headers().Get("KV-Operation"); op != "" {
		return // a delete or purge
	}
	var st struct {
		Status    string    `json:"status"`
		Items     itemsSeen `json:"items"`
		Child     string    `json:"child"`
		LastError string    `json:"last_error"`
		StartedAt time.Time `json:"started_at"`
		EndedAt   time.Time `json:"ended_at"`
	}
	if json.Unmarshal(msg.Data(), &st) != nil {
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	at := meta.Timestamp
	var failed bool
	end := st.EndedAt
	switch st.Status {
	case checkpoint.StatusSkipped:
		a.mu.Lock()
		a.skipped.add(at, false, -1)
		a.mu.Unlock()
		return
	case checkpoint.StatusWaiting:
		a.mu.Lock()
		a.parked.add(at, false, -1)
		a.mu.Unlock()
		return
	}
	if st.Child != "" && (st.Status == checkpoint.StatusDone || st.Status == checkpoint.StatusDead) {
		a.mu.Lock()
		a.parked.add(at, false, -1)
		a.mu.Unlock()
	}
	isItem := strings.Contains(msg.Subject(), ".item.")
	switch {
	case st.Status == checkpoint.StatusDone && bool(st.Items) && !isItem:
		return // a for_each node done: its items were counted as they finished
	case st.Status == checkpoint.StatusDone:
	case st.Status == checkpoint.StatusDead:
		failed = true
	case st.Status == checkpoint.StatusRetrying && st.LastError != "":
		failed, end = true, at
	default:
		return
	}
	took := time.Duration(-1)
	if !st.StartedAt.IsZero() && !end.IsZero() && !end.Before(st.StartedAt) {
		took = end.Sub(st.StartedAt)
	}
	a.mu.Lock()
	a.win.add(at, failed, took)
	if isItem && !failed {
		a.items.add(at, false, -1)
	}
	a.mu.Unlock()
}

// itemsSeen is true when a node state holds a for_each node's items.
type itemsSeen bool

// UnmarshalJSON notes that the field is there (and not null).
func (i *itemsSeen) UnmarshalJSON(b []byte) error {
	*i = string(b) != "null"
	return nil
}
