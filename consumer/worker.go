package consumer

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of Config.
const (
	DefaultConcurrency  = 16
	DefaultDrainTimeout = 30 * time.Second
	DefaultPollWait     = 5 * time.Second
	// HeartbeatGrace is how long past its timeout a handler that ignores its context keeps
	// getting heartbeats before it is left to the ack wait.
	HeartbeatGrace = 10 * time.Second
)

// Config tunes a Worker. Zero fields take the defaults.
type Config struct {
	// Names of the installation (default prefix "jetflow").
	Names workflow.Names
	// ID names this worker in node states and DLQ headers (default host-pid-random).
	ID string
	// Types limits the node types this worker consumes to these (default: every type with
	// a handler).
	Types []string
	// Concurrency is how many steps of each node type run at once (default 16). A worker
	// never holds more delivered steps of a type than this.
	Concurrency int
	// DrainTimeout is how long running steps may finish after Run's context ends (default 30 s).
	DrainTimeout time.Duration
	// MaxPayload is the largest node input or output a step takes (default 16 MiB,
	// checkpoint.DefaultMaxPayload); a larger output fails the node permanently, the size in
	// the reason, and so does a larger value in its input (the limit is per value: a node's
	// input holds the run input and its parents' outputs).
	MaxPayload int
	// InlineLimit is the largest value carried inline in a step message or a node state
	// (default 256 KiB, checkpoint.DefaultInlineLimit); a larger one goes to the blobs bucket
	// and travels by reference.
	InlineLimit int
	// PollWait is how long one pull request stays open on the server (default 5 s); the
	// server sends idle heartbeats every PollWait/2, and a pull lost to a consumer leader
	// change is noticed within two missed heartbeats.
	PollWait time.Duration
	// Logger receives the worker's logs (default: discard).
	Logger *slog.Logger
	// AllowEnv names the environment variables ${{ env.NAME }} expressions may read (default
	// none): secrets for headers, say. Nothing else of the environment is visible.
	AllowEnv []string
	// Version is reported in the worker's presence record.
	Version string
	// Observer receives step and run events for metrics (default: none).
	Observer Observer
	// Tracer, when set, makes a span per step, child of the span that published it.
	Tracer trace.TracerProvider
	// Retention is how long a run's keys are kept after it ends (default 7 days); every
	// worker runs the reaper, one at a time cluster-wide through a lease.
	Retention time.Duration

	// hook, in tests, is called at the crash points of the state machine; returning true
	// stops the worker dead there (its connection is closed, nothing more is written).
	hook func(point string) bool
	// grace, in tests, replaces HeartbeatGrace.
	grace time.Duration
}

// WithDefaults returns c with zero fields filled in.
func (c Config) WithDefaults() Config {
	if c.Names.Prefix() == "" {
		c.Names = workflow.MustNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.ID = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "worker"), os.Getpid(), hex.EncodeToString(b[:]))
	}
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.MaxPayload = cmp.Or(c.MaxPayload, checkpoint.DefaultMaxPayload)
	c.InlineLimit = cmp.Or(c.InlineLimit, checkpoint.DefaultInlineLimit)
	c.PollWait = cmp.Or(c.PollWait, DefaultPollWait)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Concurrency < 0:
		return errors.New("consumer: Concurrency must be positive")
	case c.DrainTimeout < 0:
		return errors.New("consumer: DrainTimeout must be positive")
	case c.MaxPayload < 0:
		return errors.New("consumer: MaxPayload must be positive")
	case c.InlineLimit < 0:
		return errors.New("consumer: InlineLimit must be positive")
	}
	for _, t := range c.Types {
		if !workflow.ValidName(t) {
			return fmt.Errorf("consumer: node type %q: use letters, digits, '_' and '-' only", t)
		}
	}
	return nil
}

// Worker runs steps. Register handlers with Handle, then call Run.
type Worker struct {
	js    jetstream.JetStream
	store *checkpoint.Store
	cfg   Config
	log   *slog.Logger

	mu        sync.Mutex
	handlers  map[string]HandlerFunc
	inflight  map[string]*claimed   // by idempotency key: steps this worker is processing
	states    map[string]*typeState // by node type, once Run started
	itemEnds  itemCombiner          // for_each items' ends, written together per node
	itemLists itemLists             // for_each nodes' lists of items, parsed
	cancels   map[string]bool       // cancelled runs seen by the watch
	nCancels  atomic.Int32          // len(cancels): the step path reads it, not the map
	handBacks map[uint64]uint64     // stream seq → delivery of hand-backs whose mark failed

	dead     chan struct{} // closed when a test hook stopped the worker dead
	deadOnce sync.Once

	suspect  chan struct{}     // one crash suspect runs at a time in this worker
	env      map[string]string // allowed environment for expressions
	breakers *breaker.Set
	limits   *breaker.Limits
	presence *presence
	ops      *opsDeadline // the shared deadline of broker calls; nil before Run
	inFlight atomic.Int64
	known    knownRuns // runs whose record this worker has read (runcheck.go)
}

// ErrRunCancelled is the cause of a handler's context being cancelled because an operator
// cancelled its run.
var ErrRunCancelled = errors.New("run cancelled")

// New returns a worker that consumes through js and checkpoints in store.
func New(js jetstream.JetStream, store *checkpoint.Store, cfg Config) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{
		js:        js,
		store:     store,
		cfg:       cfg,
		log:       cfg.Logger,
		handlers:  map[string]HandlerFunc{},
		inflight:  map[string]*claimed{},
		cancels:   map[string]bool{},
		handBacks: map[uint64]uint64{},
		dead:      make(chan struct{}),
		env:       allowedEnv(cfg.AllowEnv),
		suspect:   make(chan struct{}, 1),
	}, nil
}

// quarantineWait bounds how long a crash suspect waits for the quarantine slot before it is
// handed back (marked, so its next delivery counts no crash).
const quarantineWait = time.Minute

// quarantine waits for this worker's crash-suspect slot, sending heartbeats for msg while it
// waits, for at most quarantineWait; it returns the slot's release func, or false when ctx
// ended or the wait ran out first. The release runs once.
func (w *Worker) quarantine(ctx context.Context, msg jetstream.Msg, ackWait time.Duration) (func(), bool) {
	t := time.NewTicker(max(ackWait/3, 100*time.Millisecond))
	defer t.Stop()
	limit := time.NewTimer(quarantineWait)
	defer limit.Stop()
	for {
		select {
		case w.suspect <- struct{}{}:
			var once sync.Once
			return func() { once.Do(func() { <-w.suspect }) }, true
		case <-t.C:
			_ = msg.InProgress()
		case <-limit.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// maxHandBacks bounds the hand-backs a worker remembers (see rememberHandBack).
const maxHandBacks = 4096

// rememberHandBack remembers that this worker handed back delivery delivery of message seq
// without marking the node state (the mark's write failed: the broker error that made it hand
// the step back). A redelivery here is then no crash. Another worker that gets it counts
// one; at most one per outage, since that count's write fails while the outage lasts.
func (w *Worker) rememberHandBack(seq, delivery uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.handBacks) >= maxHandBacks {
		for k := range w.handBacks {
			delete(w.handBacks, k)
			break
		}
	}
	w.handBacks[seq] = delivery
}

// handedBack reports whether this worker remembers handing back message seq unmarked before
// delivery delivery, and forgets it.
func (w *Worker) handedBack(seq, delivery uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, ok := w.handBacks[seq]
	delete(w.handBacks, seq)
	return ok && d < delivery
}

// handler returns the handler of typ, or nil.
func (w *Worker) handler(typ string) HandlerFunc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.handlers[typ]
}

// Breakers returns the worker's breakers once Run has started (nil before).
func (w *Worker) Breakers() *breaker.Set {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.breakers
}

// Limits returns the worker's share of the cluster-wide rate limits once Run has started
// (nil before).
func (w *Worker) Limits() *breaker.Limits {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.limits
}

// Store returns the checkpoint store the worker writes.
func (w *Worker) Store() *checkpoint.Store { return w.store }

// JetStream returns the worker's JetStream context.
func (w *Worker) JetStream() jetstream.JetStream { return w.js }

// ID returns the worker's ID.
func (w *Worker) ID() string { return w.cfg.ID }

// Handle registers the handler of node type typ. Register before Run.
func (w *Worker) Handle(typ string, h HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[typ] = h
}

// Types returns the node types this worker will consume, sorted.
func (w *Worker) Types() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for t := range w.handlers {
		if len(w.cfg.Types) == 0 || slices.Contains(w.cfg.Types, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// typeState is one node type's consumer and slots.
type typeState struct {
	typ        string
	handler    HandlerFunc
	cons       jetstream.Consumer
	ackWait    time.Duration
	maxDeliver int
	slots      *slots

	starts bool // the consumer of start requests (start.go), not a node type's

	limit       atomic.Int32 // health monitor's cap on running steps (0: Concurrency)
	pausedUntil atomic.Int64 // health monitor's pause, unix nanoseconds (0: none)
}

// Run consumes until ctx ends, then stops fetching, lets running steps finish for up to
// DrainTimeout, hands the rest back at once, and returns.
func (w *Worker) Run(ctx context.Context) error {
	types := w.Types()
	if len(types) == 0 {
		return errors.New("consumer: no handlers registered for the selected types")
	}
	if slices.Contains(types, workflow.StartConsumerType) {
		return fmt.Errorf("consumer: node type %q is reserved for start requests; register the handler under another name", workflow.StartConsumerType)
	}
	for _, t := range w.cfg.Types {
		if !slices.Contains(types, t) {
			return fmt.Errorf("consumer: no handler for node type %q", t)
		}
	}
	var states []*typeState
	for _, t := range types {
		if err := jsetup.EnsureConsumer(ctx, w.js, w.cfg.Names, jsetup.ConsumerConfig{Type: t}, false, 0, nil); err != nil {
			return err
		}
		cons, err := w.js.Consumer(ctx, w.cfg.Names.StepsStream(), w.cfg.Names.Consumer(t))
		if err != nil {
			return fmt.Errorf("consumer %s: %w", w.cfg.Names.Consumer(t), err)
		}
		info := cons.CachedInfo()
		ts := &typeState{
			typ:        t,
			handler:    w.handlers[t],
			cons:       cons,
			ackWait:    cmp.Or(info.Config.AckWait, jsetup.DefaultAckWait),
			maxDeliver: info.Config.MaxDeliver,
			slots:      newSlots(w.cfg.Concurrency),
		}
		if ts.maxDeliver <= 0 {
			ts.maxDeliver = 1 << 30
		}
		states = append(states, ts)
		w.mu.Lock()
		if w.states == nil {
			w.states = map[string]*typeState{}
		}
		w.states[t] = ts
		w.mu.Unlock()
	}

	starts, err := w.startState(ctx)
	if err != nil {
		return err
	}
	states = append(states, starts)

	if err := w.startShared(ctx, types); err != nil {
		return err
	}

	// The fetch context ends with ctx; the work context lives DrainTimeout longer, so shutdown
	// stops fetching before it cancels running steps.
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Lock()
	w.ops = newOpsDeadline(workCtx)
	w.mu.Unlock()
	defer stopWork()
	go func() {
		select {
		case <-w.dead:
			stopFetch()
			stopWork()
		case <-fetchCtx.Done():
		}
	}()

	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		var bg sync.WaitGroup
		bg.Go(func() { _ = w.breakers.Run(fetchCtx) })
		bg.Go(func() { w.presence.run(fetchCtx) })
		bg.Go(func() { _ = dlq.NewSweeper(w.js, w.store, w.cfg.Names, w.cfg.ID, w.log).Run(fetchCtx) })
		bg.Go(func() {
			_ = checkpoint.NewReaper(w.js, w.store, w.cfg.Names, checkpoint.ReaperConfig{
				Retention: w.cfg.Retention, Owner: w.cfg.ID, Logger: w.log}).Run(fetchCtx)
		})
		bg.Go(func() { w.runTriggers(fetchCtx) })
		bg.Go(func() { w.watchSignals(fetchCtx) })
		w.watchCancels(fetchCtx)
		bg.Wait()
	}()
	select {
	case <-w.breakers.Ready():
	case <-time.After(5 * time.Second):
		w.log.Warn("breaker trips not read yet; starting anyway", "worker", w.cfg.ID)
	}

	var wg sync.WaitGroup
	var pullers sync.WaitGroup
	run := newRunners()
	for _, ts := range states {
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			w.pull(fetchCtx, workCtx, ts, run, &wg)
		}()
	}
	w.log.Info("worker started", "worker", w.cfg.ID, "types", strings.Join(types, ","), "concurrency", w.cfg.Concurrency)
	<-fetchCtx.Done()
	pullers.Wait()

	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
		run.wait() // idle now, and told to stop: they end at once
	case <-time.After(w.cfg.DrainTimeout):
		w.log.Warn("drain timeout: cancelling running steps", "worker", w.cfg.ID, "drain_timeout", w.cfg.DrainTimeout)
		stopWork()
		select {
		case <-drained:
		case <-time.After(w.grace()):
			w.log.Warn("steps still running after cancel; leaving them to the ack wait", "worker", w.cfg.ID)
		}
	}
	<-watchDone
	w.log.Info("worker stopped", "worker", w.cfg.ID)
	return nil
}

// startState binds the consumer of start requests, creating it when missing.
func (w *Worker) startState(ctx context.Context) (*typeState, error) {
	if err := jsetup.EnsureConsumer(ctx, w.js, w.cfg.Names, jsetup.ConsumerConfig{Type: workflow.StartConsumerType}, false, 0, nil); err != nil {
		// An install set up by an older jetflow has no start subjects in its steps stream.
		return nil, fmt.Errorf("%w (run `jetflow setup` once to add start requests to stream %s)", err, w.cfg.Names.StepsStream())
	}
	cons, err := w.js.Consumer(ctx, w.cfg.Names.StepsStream(), w.cfg.Names.StartConsumer())
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", w.cfg.Names.StartConsumer(), err)
	}
	return &typeState{
		typ:        workflow.StartConsumerType,
		starts:     true,
		cons:       cons,
		ackWait:    cmp.Or(cons.CachedInfo().Config.AckWait, jsetup.DefaultAckWait),
		maxDeliver: 1 << 30,
		slots:      newSlots(w.cfg.Concurrency),
	}, nil
}

// startShared binds the breakers and workers buckets and prepares the shared breakers, rate
// limits and presence.
func (w *Worker) startShared(ctx context.Context, types []string) error {
	bkv, err := w.js.KeyValue(ctx, w.cfg.Names.BreakersBucket())
	if err != nil {
		return fmt.Errorf("bucket %s: %w (run `jetflow setup`)", w.cfg.Names.BreakersBucket(), err)
	}
	wkv, err := w.js.KeyValue(ctx, w.cfg.Names.WorkersBucket())
	if err != nil {
		return fmt.Errorf("bucket %s: %w (run `jetflow setup`)", w.cfg.Names.WorkersBucket(), err)
	}
	p := newPresence(wkv, w.cfg.ID, w.cfg.Version, types, &w.inFlight)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.presence = p
	w.limits = breaker.NewLimits(p.count)
	w.breakers = breaker.New(bkv, w.cfg.ID, breaker.Options{Logger: w.log, OnTrip: w.onTrip, OnState: w.cfg.Observer.BreakerState})
	return nil
}

// onTrip pauses a node type's consumer until the trip ends, when this worker owns a trip of a
// key that covers the whole type (breaker scope "type"). One owner, one pause per trip.
func (w *Worker) onTrip(st breaker.Settings, until time.Time) {
	typ := st.PauseType
	if typ == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.js.PauseConsumer(ctx, w.cfg.Names.StepsStream(), w.cfg.Names.Consumer(typ), until); err != nil {
		w.log.Warn("cannot pause consumer", "type", typ, "err", err)
		return
	}
	w.log.Warn("consumer paused while its breaker is open", "type", typ, "until", until.Format(time.RFC3339))
}

// pullBatches is how many pull requests of one type a worker keeps open at once: a request
// that waits for messages does not keep slots freed meanwhile from being asked for.
const pullBatches = 2

// pull fetches steps of one type and runs each on a runner goroutine. It asks for the slots
// it has free, and for short steps a queue's worth more (slots.go): a step that waits for a
// slot is kept alive, so no delivered step outlives its ack wait here while the server hands
// it to another worker. A fetched step that finds the worker stopping or paused is handed
// back, and so are the queued ones.
func (w *Worker) pull(fetchCtx, workCtx context.Context, ts *typeState, run *runners, wg *sync.WaitGroup) {
	var batches, keeper sync.WaitGroup
	keeper.Go(func() { w.keepQueued(fetchCtx, workCtx, ts) })
	defer func() {
		batches.Wait()
		keeper.Wait()
		w.handBackQueued(workCtx, ts)
	}()
	open := make(chan struct{}, pullBatches)
	backoff := 100 * time.Millisecond
	// A pull request the server lost shows only as missed heartbeats (two in a row): a
	// heartbeat a fifth of the expiry finds a lost request within 2 s.
	expiry := max(w.cfg.PollWait, time.Second)
	hb := min(max(expiry/5, 500*time.Millisecond), expiry/3)
	for fetchCtx.Err() == nil {
		if !ts.waitUnpaused(fetchCtx) {
			return
		}
		select {
		case open <- struct{}{}:
		case <-fetchCtx.Done():
			return
		}
		n := ts.take(fetchCtx)
		if n == 0 {
			<-open
			continue // stopping or paused: the loop's checks decide
		}
		rctx, cancel := context.WithTimeout(fetchCtx, expiry)
		batch, err := ts.cons.Fetch(n, jetstream.FetchContext(rctx), jetstream.FetchHeartbeat(hb))
		if err != nil {
			cancel()
			ts.slots.unasked(n)
			<-open
			w.log.Warn("pull failed", "type", ts.typ, "err", err)
			select {
			case <-fetchCtx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		batches.Go(func() {
			defer func() { cancel(); <-open }()
			got := 0
			for msg := range batch.Messages() {
				got++
				if fetchCtx.Err() != nil || ts.paused() {
					ts.slots.unasked(1)
					hctx, cancel := context.WithTimeout(context.WithoutCancel(workCtx), handBackTimeout)
					w.handBackUnstarted(hctx, ts, msg)
					cancel()
					continue
				}
				if ts.slots.delivered(msg) {
					w.start(fetchCtx, workCtx, ts, msg, run, wg)
				}
			}
			ts.slots.unasked(n - got)
			if err := batch.Error(); err != nil && fetchCtx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
				// A missed heartbeat (a lost pull request, a leader change, a starved
				// machine) or a reconnect: the next request asks again.
				level := slog.LevelWarn
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					level = slog.LevelDebug
				}
				w.log.Log(fetchCtx, level, "pull interrupted; pulling again", "type", ts.typ, "err", err)
			}
		})
	}
}

// start runs msg, which holds one of the type's slots, on a runner. When it finishes, the
// first queued step takes its slot over (unless the worker is stopping or the type paused).
func (w *Worker) start(fetchCtx, workCtx context.Context, ts *typeState, msg jetstream.Msg, run *runners, wg *sync.WaitGroup) {
	wg.Add(1)
	w.inFlight.Add(1)
	w.cfg.Observer.InFlight(1)
	began := time.Now()
	run.run(fetchCtx, func(r *runner) {
		w.process(workCtx, ts, msg, r, func() {
			w.cfg.Observer.InFlight(-1)
			w.inFlight.Add(-1)
			if next := ts.slots.finished(time.Since(began), fetchCtx.Err() == nil && !ts.paused()); next != nil {
				w.start(fetchCtx, workCtx, ts, next, run, wg) // before Done: the drain waits for it too
			}
			wg.Done()
		})
	})
}

// keepQueued keeps queued steps alive (InProgress once they have waited a quarter of the
// ack wait) and hands them back while the type is paused, until fetchCtx ends.
func (w *Worker) keepQueued(fetchCtx, workCtx context.Context, ts *typeState) {
	every := min(ts.ackWait/4, 250*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-fetchCtx.Done():
			return
		case <-tick.C:
		}
		if ts.paused() {
			w.handBackQueued(workCtx, ts)
			continue
		}
		for _, msg := range ts.slots.stale(ts.ackWait / 4) {
			if err := msg.InProgress(); err != nil {
				w.log.Debug("cannot keep a queued step alive", "type", ts.typ, "err", err)
			}
		}
	}
}

// handBackQueued hands back every queued step, unstarted.
func (w *Worker) handBackQueued(workCtx context.Context, ts *typeState) {
	q := ts.slots.unqueue()
	if len(q) == 0 {
		return
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(workCtx), handBackTimeout)
	defer cancel()
	for _, msg := range q {
		w.handBackUnstarted(hctx, ts, msg)
	}
}

// take waits for room to ask for at least one step of the type and takes all of it, within
// the health monitor's cap on the steps in use (running or asked for); 0 when ctx ended or
// the type was paused meanwhile.
func (ts *typeState) take(ctx context.Context) int {
	n := ts.slots.take(ctx, ts.ackWait, func() int { return int(ts.limit.Load()) })
	if n > 0 && ts.paused() {
		ts.slots.unasked(n)
		return 0
	}
	return n
}

// handBackTimeout bounds the marking of the steps a stopping or paused worker hands back.
const handBackTimeout = 5 * time.Second

// handBackUnstarted hands back a step this worker received but never started, marking its
// node state so the next delivery does not count a crash (see stepRun.handBack). A step
// whose state cannot be read is handed back unmarked.
func (w *Worker) handBackUnstarted(ctx context.Context, ts *typeState, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return
	}
	env, err := workflow.DecodeEnvelope(msg.Data())
	if err != nil || ctx.Err() != nil {
		_ = msg.Nak() // a malformed step goes to the DLQ on its next delivery
		return
	}
	s := &stepRun{w: w, ts: ts, msg: msg, meta: meta, env: env, detached: true}
	if err := s.read(ctx); err != nil {
		_ = msg.Nak()
		return
	}
	_ = s.handBack(ctx, 0)
}

// paused reports whether the health monitor paused this type in this worker.
func (ts *typeState) paused() bool {
	until := ts.pausedUntil.Load()
	return until != 0 && time.Now().UnixNano() < until
}

// waitUnpaused waits out a pause; false when ctx ended first.
func (ts *typeState) waitUnpaused(ctx context.Context) bool {
	for ts.paused() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return ctx.Err() == nil
}

// SetTypeConcurrency makes this worker run at most n steps of typ at once (at most its
// Concurrency); the health monitor calls it for a degraded type.
func (w *Worker) SetTypeConcurrency(typ string, n int) {
	if ts := w.typeState(typ); ts != nil {
		if n >= w.cfg.Concurrency {
			n = 0
		}
		ts.limit.Store(int32(max(n, 0)))
		ts.slots.signal() // a cap that rose leaves room to ask for
	}
}

// PauseType stops this worker fetching steps of typ until until (or ResumeType); its
// prefetched steps are handed back. The health monitor calls it for an unhealthy type.
func (w *Worker) PauseType(typ string, until time.Time) {
	if ts := w.typeState(typ); ts != nil {
		ts.pausedUntil.Store(until.UnixNano())
	}
}

// ResumeType lifts a pause of typ.
func (w *Worker) ResumeType(typ string) {
	if ts := w.typeState(typ); ts != nil {
		ts.pausedUntil.Store(0)
	}
}

func (w *Worker) typeState(typ string) *typeState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.states[typ]
}

// watchCancels keeps the set of cancelled runs and cancels their running handlers. A
// deleted key is forgotten: a cancel taken back (the run ended otherwise first) or a run
// the reaper purged.
func (w *Worker) watchCancels(ctx context.Context) {
	var counting sync.WaitGroup
	defer counting.Wait()
	open := func(ctx context.Context) (jetstream.KeyWatcher, error) {
		return w.store.KV().Watch(ctx, workflow.CancelKey("*"))
	}
	kvwatch.Follow(ctx, open, func(e jetstream.KeyValueEntry) {
		if e == nil {
			return
		}
		run := strings.TrimPrefix(e.Key(), workflow.CancelKey(""))
		w.mu.Lock()
		defer w.mu.Unlock()
		defer func() { w.nCancels.Store(int32(len(w.cancels))) }()
		if e.Operation() != jetstream.KeyValuePut {
			delete(w.cancels, run)
			return
		}
		if !w.cancels[run] && time.Since(e.Created()) < 10*time.Second && w.presence != nil && w.presence.leads() {
			counting.Go(func() { w.countCancelled(ctx, run) })
		}
		if !w.cancels[run] && mayBeChild(run) && time.Since(e.Created()) < wakeWindow {
			counting.Go(func() { w.wakeCancelled(ctx, run) })
		}
		w.cancels[run] = true
		w.nCancels.Store(int32(len(w.cancels)))
		for _, c := range w.inflight {
			if c.run == run {
				if cancel := c.cancel.Load(); cancel != nil {
					(*cancel)(ErrRunCancelled)
				}
			}
		}
	})
}

// wakeWindow is how old a cancel of a subflow's run may be for a worker that sees it to
// wake the parent node: the steps stream's duplicate window, within which the wakes every
// worker sends are one.
const wakeWindow = 10 * time.Minute

// wakeCancelled wakes the parent node of a cancelled subflow run once the run's end is
// written (the cancel writes its key first), so the parent node fails.
func (w *Worker) wakeCancelled(ctx context.Context, run string) {
	for range 50 {
		end, _, err := w.store.End(ctx, run)
		if err == nil && end != nil {
			if err := w.wakeParent(ctx, run); err != nil {
				w.log.Warn("cannot wake the parent of a cancelled subflow", "run_id", run, "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// countCancelled reports a run's cancelled end to the Observer, once it is there: Cancel
// writes the key first and the end right after (and takes the key back when the run ended
// otherwise). Only a fresh cancel, seen by the leading worker, is counted.
func (w *Worker) countCancelled(ctx context.Context, run string) {
	if _, ok := w.cfg.Observer.(nopObserver); ok {
		return
	}
	for range 20 {
		end, _, err := w.store.End(ctx, run)
		if err == nil && end != nil {
			if end.Status != checkpoint.EndCancelled {
				return
			}
			r, err := w.store.Run(ctx, run)
			if err != nil {
				return
			}
			w.cfg.Observer.RunFinished(r.Workflow, checkpoint.EndCancelled, end.At.Sub(r.Created))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cancelled reports whether the watch saw a cancel of run. While no run is cancelled, as
// almost always, it takes no lock.
func (w *Worker) cancelled(run string) bool {
	if w.nCancels.Load() == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cancels[run]
}

// inflight is a step this worker is processing: which message, which dispatch, which run.
type inflight struct {
	seq      uint64
	dispatch string
	run      string
}

// claimed is a step's entry among the steps in flight; cancel, while its handler runs,
// cancels the handler's context (see stepRun.track).
type claimed struct {
	inflight
	key    string
	cancel atomic.Pointer[context.CancelCauseFunc]
}

// claim marks a step in flight in this worker and returns its entry. When the same step is
// already in flight here, it returns that one and false: a second copy of a step must not run
// its handler twice at once.
func (w *Worker) claim(key string, f inflight) (*claimed, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, busy := w.inflight[key]; busy {
		return cur, false
	}
	c := &claimed{inflight: f, key: key}
	w.inflight[key] = c
	return c, true
}

// unclaim removes the entry claim made.
func (w *Worker) unclaim(c *claimed) {
	w.mu.Lock()
	if w.inflight[c.key] == c {
		delete(w.inflight, c.key)
	}
	w.mu.Unlock()
}

// grace is how long past its timeout a handler that ignores its context is kept.
func (w *Worker) grace() time.Duration { return cmp.Or(w.cfg.grace, HeartbeatGrace) }

// at is called at a crash point; it reports whether a test stopped the worker dead there.
func (w *Worker) at(point string) bool {
	if w.cfg.hook == nil || !w.cfg.hook(point) {
		return false
	}
	w.deadOnce.Do(func() { close(w.dead) })
	return true
}

// presenceCount returns the live workers of nodeType this worker knows of (0 before Run).
func (w *Worker) presenceCount(nodeType string) int {
	w.mu.Lock()
	p := w.presence
	w.mu.Unlock()
	if p == nil {
		return 0
	}
	return p.count(nodeType)
}
