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
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of ReaperConfig.
const (
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultReaperInterval = time.Hour
	DefaultOrphanGrace    = time.Minute
)

// orphanMargin is kept between the oldest run record Repair looks at and the edge of the
// steps stream's duplicate window, for clock skew between the reaper and the server.
const orphanMargin = 2 * time.Minute

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
	// OrphanGrace is how old a run record must be before Repair publishes root steps it
	// finds missing, and how often Run repairs (default 1 min).
	OrphanGrace time.Duration
}

// WithDefaults returns c with zero fields filled in.
func (c ReaperConfig) WithDefaults() ReaperConfig {
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	c.Interval = cmp.Or(c.Interval, DefaultReaperInterval)
	c.OrphanGrace = cmp.Or(c.OrphanGrace, DefaultOrphanGrace)
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
	case c.OrphanGrace < 0:
		return errors.New("checkpoint: ReaperConfig.OrphanGrace must be positive")
	}
	return nil
}

// Reaper purges finished runs from the runs bucket a retention after their end (DESIGN.md
// "Names on the broker"), skipping runs that still have DLQ entries, and repairs runs whose
// start was cut short between the run record and its root steps. Any number of workers may
// run one: a lease key lets one sweep at a time, cluster-wide.
type Reaper struct {
	js    jetstream.JetStream
	store *Store
	names workflow.Names
	cfg   ReaperConfig
	err   error // a bad config, returned by Run and Sweep

	mu     sync.Mutex
	cursor uint64 // runs-stream sequence of the last run record Repair looked at
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

// Run sweeps now and then every Interval, and repairs now and then every OrphanGrace, until
// ctx ends, then gives up the lease. A failed sweep or repair is logged and tried again at
// the next tick; Run returns nil when ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	if r.err != nil {
		return r.err
	}
	log := r.cfg.Logger
	sweep := time.NewTicker(r.cfg.Interval)
	defer sweep.Stop()
	repair := time.NewTicker(r.cfg.OrphanGrace)
	defer repair.Stop()
	defer r.release()
	for tick := sweep.C; ; {
		if tick == sweep.C {
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
		}
		n, err := r.Repair(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseHeld):
		case err != nil:
			log.Warn("reaper: repair of cut-short starts failed; trying again", "err", err)
		case n > 0:
			log.Warn("reaper: published the root steps of runs whose start was cut short", "runs", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			tick = sweep.C
		case <-repair.C:
			tick = repair.C
		}
	}
}

// Repair finishes the starts that were cut short: a run record written without its root
// steps (the producer failed or died in between) would stay running with no step for ever.
// It reads the run records written since it last looked that are at least OrphanGrace old,
// and publishes each one's root steps with their usual msg-id (<run>.<node>). A root that was
// stored is a duplicate the steps stream drops, so Repair only looks at records younger than
// the stream's duplicate window (less a margin for clock skew): beyond it a root still
// queued could not be told from a missing one. A run whose definition is gone is ended
// failed. Repair reports how many runs it published steps for or ended; ErrLeaseHeld if
// another reaper holds the lease.
func (r *Reaper) Repair(ctx context.Context) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if _, err := r.acquire(ctx); err != nil {
		return 0, err
	}
	steps, err := r.js.Stream(ctx, r.names.StepsStream())
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", r.names.StepsStream(), err)
	}
	now := r.cfg.Clock()
	newest := now.Add(-r.cfg.OrphanGrace)
	oldest := now.Add(-(steps.CachedInfo().Config.Duplicates - orphanMargin))
	if !oldest.Before(newest) {
		return 0, nil // the duplicate window is too short to publish safely
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{"$KV." + r.store.runs.Bucket() + "." + workflow.RunKey("*")},
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &oldest,
		InactiveThreshold: 30 * time.Second, // one a minute: let the server drop it soon
	}
	if r.cursor > 0 {
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, r.cursor+1
	}
	stream := "KV_" + r.store.runs.Bucket()
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	c, err := s.OrderedConsumer(ctx, kvwatch.ReadNow(cfg))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", stream, err)
	}
	if info := c.CachedInfo(); info != nil && info.NumPending == 0 {
		return 0, nil
	}
	repaired := 0
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			return repaired, fmt.Errorf("read %s: %w", stream, err)
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return repaired, fmt.Errorf("read %s: %w", stream, err)
			}
			if meta.Timestamp.After(newest) {
				return repaired, nil // younger than the grace: the next repair looks again
			}
			r.cursor, pending = meta.Sequence.Stream, meta.NumPending
			var run Run
			if meta.Timestamp.Before(oldest) || msg.Headers().Get("KV-Operation") != "" || json.Unmarshal(msg.Data(), &run) != nil {
				continue
			}
			done, err := r.repairRun(ctx, &run)
			if err != nil {
				r.cursor = meta.Sequence.Stream - 1 // look at it again next time
				return repaired, err
			}
			if done {
				repaired++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return repaired, fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 || pending == 0 {
			return repaired, nil
		}
	}
}

// repairRun publishes the root steps of run that the steps stream does not have (it drops
// the others as duplicates), and reports whether it published any; a run whose definition
// is gone is ended failed instead.
func (r *Reaper) repairRun(ctx context.Context, run *Run) (bool, error) {
	def, err := r.store.Definition(ctx, run.Def)
	if errors.Is(err, ErrNotFound) {
		return r.store.CreateEnd(ctx, run.ID, &End{Status: EndFailed, At: r.cfg.Clock().UTC(),
			Reason: fmt.Sprintf("the run's definition %s of workflow %s is gone, so its steps were never published: apply the workflow and start the run again", run.Def, run.Workflow)})
	}
	if err != nil {
		return false, err
	}
	in := run.Input
	if len(in) == 0 {
		in = json.RawMessage("null")
	}
	input, err := json.Marshal(struct {
		Input json.RawMessage            `json:"input"`
		Nodes map[string]json.RawMessage `json:"nodes"`
	}{in, map[string]json.RawMessage{}})
	if err != nil {
		return false, fmt.Errorf("input of run %s: %w", run.ID, err)
	}
	published := false
	for _, n := range def.Roots() {
		env := &workflow.Envelope{RunID: run.ID, Workflow: run.Workflow, Def: run.Def, Node: n.Name, Input: input, Dispatch: workflow.DispatchFirst}
		dup, err := r.publishStep(ctx, n.Type, env)
		if err != nil {
			return published, err
		}
		if !dup {
			r.cfg.Logger.Warn("reaper: published a root step its start never stored", "run", run.ID, "node", n.Name)
			published = true
		}
	}
	return published, nil
}

// publishStep publishes a first dispatch as the producer does (same subject, msg-id and
// headers) and reports whether the steps stream already had it.
func (r *Reaper) publishStep(ctx context.Context, nodeType string, env *workflow.Envelope) (bool, error) {
	body, err := env.Encode()
	if err != nil {
		return false, err
	}
	msg := &nats.Msg{Subject: r.names.StepSubject(nodeType, env.Workflow, env.Node), Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderMsgID, env.MsgID())
	msg.Header.Set(workflow.HeaderRun, env.RunID)
	msg.Header.Set(workflow.HeaderNode, env.Node)
	ack, err := r.js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("publish step %s of run %s: %w", env.Node, env.RunID, err)
	}
	return ack.Duplicate, nil
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
	// Blobs first: a sweep cut short after them finds the run again by its end.
	purge := map[string]bool{}
	for _, run := range runs {
		purge[run.id] = true
	}
	if _, err := r.store.purgeBlobs(ctx, purge, r.cfg.Retention, r.cfg.Clock()); err != nil {
		return 0, fmt.Errorf("purge blobs: %w", err)
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
		workflow.SinksKey(id), workflow.ProgressKey(id, ">"), workflow.CancelKey(id), workflow.SpendKey(id), workflow.SignalKey(id, "*"), "item."+id+".>")
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

// release gives the lease up if this reaper holds it, so another can take over at once. A
// renewal cut short by the stopping context may still land after the read here: the write
// then conflicts, and release reads again instead of leaving the renewed lease held.
func (r *Reaper) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range MaxCASRetries {
		var cur lease
		rev, err := get(ctx, r.store.runs, LeaseKey, &cur)
		if err != nil || cur.Owner != r.cfg.Owner {
			return
		}
		cur.Until = r.cfg.Clock().UTC()
		if _, err := put(ctx, r.store.runs, LeaseKey, &cur, rev); !errors.Is(err, ErrConflict) {
			return
		}
	}
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
	c, err := s.OrderedConsumer(ctx, kvwatch.ReadNow(jetstream.OrderedConsumerConfig{HeadersOnly: true}))
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
