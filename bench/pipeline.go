package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the benchmark sizes: the figures BENCHMARKS.md records.
const (
	DefaultRuns        = 2000
	DefaultSteps       = 5
	DefaultConcurrency = 64
	// DefaultStall is how long a benchmark waits without any run ending before it gives up.
	DefaultStall = time.Minute
)

// Dialer opens a new connection named name. Each benchmark opens its own, so a worker never
// shares a connection with the producer or the watch that counts ends.
type Dialer func(name string) (*nats.Conn, error)

// PipelineConfig sizes a hand-written pipeline run. Zero fields take the defaults.
type PipelineConfig struct {
	// Name names the stream (upper-cased), its subjects and its bucket (default "handloop").
	// The stream and bucket must not exist; both are deleted when Pipeline returns.
	Name string
	// Runs is how many chains run (default 2,000).
	Runs int
	// Steps is each chain's length (default 5).
	Steps int
	// Concurrency is how many steps are processed at once (default 64).
	Concurrency int
	// Payload is how many bytes of input every step message carries (default 0).
	Payload int
	// Replicas of the stream and bucket (default 1).
	Replicas int
	// Mode is the loop measured (default HandLoop).
	Mode Mode
	// Ended, when set, counts the runs that ended (for a progress display).
	Ended *atomic.Int64
	// Stall is how long to wait without a run ending before giving up (default 1 min).
	Stall time.Duration
}

// WithDefaults returns c with zero fields filled in.
func (c PipelineConfig) WithDefaults() PipelineConfig {
	c.Name = cmp.Or(c.Name, "handloop")
	c.Runs = cmp.Or(c.Runs, DefaultRuns)
	c.Steps = cmp.Or(c.Steps, DefaultSteps)
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.Replicas = cmp.Or(c.Replicas, 1)
	c.Stall = cmp.Or(c.Stall, DefaultStall)
	if c.Ended == nil {
		c.Ended = new(atomic.Int64)
	}
	return c
}

func (c PipelineConfig) validate() error {
	switch {
	case c.Runs < 0:
		return errors.New("bench: Runs must be positive")
	case c.Steps < 0:
		return errors.New("bench: Steps must be positive")
	case c.Concurrency < 0:
		return errors.New("bench: Concurrency must be positive")
	case c.Payload < 0:
		return errors.New("bench: Payload must be positive")
	case strings.ContainsAny(c.Name, ".*> \t"):
		return fmt.Errorf("bench: Name %q must be one subject token", c.Name)
	}
	return nil
}

// Mode is which hand-written loop Pipeline runs.
type Mode int

const (
	// HandLoop is the loop a user writes with nats.go's defaults: per step consume, KV get,
	// KV create, publish the next step with a Nats-Msg-Id, ack. The bucket is created through
	// the KV API with its defaults, so reads are direct gets (any replica may answer); the last
	// step records nothing more than its own key.
	HandLoop Mode = iota
	// LeaderLoop is HandLoop with direct gets turned off on the bucket, so every read goes to
	// the stream leader (what jetflow's setup does for its runs bucket on more than one replica).
	LeaderLoop
	// RawChain drops the KV work: consume, publish the next step, ack.
	RawChain
)

// String names the mode as `jetflow bench` prints it.
func (m Mode) String() string {
	switch m {
	case HandLoop:
		return "hand loop"
	case LeaderLoop:
		return "leader loop"
	case RawChain:
		return "raw chain"
	}
	return "mode " + strconv.Itoa(int(m))
}

// Result is what one benchmark measured.
type Result struct {
	// Runs and Steps are how many runs ended and how many steps they took in all.
	Runs, Steps int
	// Elapsed is the time from the first consume (or the worker's start) to the last end;
	// setup and publishing the first steps are not included.
	Elapsed time.Duration
	// CPU is the CPU time this process used over Elapsed: the worker (or the hand loop),
	// and an embedded server when the benchmark runs on one.
	CPU time.Duration
}

// CPUPerStep is the process's CPU time per step.
func (r Result) CPUPerStep() time.Duration {
	if r.Steps == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Steps)
}

// StepsPerSec is the step throughput.
func (r Result) StepsPerSec() float64 { return perSec(r.Steps, r.Elapsed) }

// RunsPerSec is the run throughput.
func (r Result) RunsPerSec() float64 { return perSec(r.Runs, r.Elapsed) }

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Pipeline creates a work-queue stream and a KV bucket as a user would (nats.go's defaults:
// file storage, the default duplicate window; for LeaderLoop, direct gets off), publishes the
// first step of every run, then times the consumers until every run ended. dial opens the
// connection; ctx bounds the whole run.
func Pipeline(ctx context.Context, dial Dialer, cfg PipelineConfig) (res Result, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return res, err
	}
	nc, err := dial("jetflow bench pipeline")
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	stream, subj, bucket := strings.ToUpper(cfg.Name), cfg.Name+".step", cfg.Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err = errors.Join(err, deleteStreams(dctx, js, stream, "KV_"+bucket))
	}()
	if err := retryStorage(ctx, func() error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{subj + ".>"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		})
		return err
	}); err != nil {
		return res, fmt.Errorf("create stream %s: %w", stream, err)
	}
	if err := retryStorage(ctx, func() error {
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: cfg.Replicas})
		return err
	}); err != nil {
		return res, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	if cfg.Mode == LeaderLoop {
		if err := directOff(ctx, js, "KV_"+bucket); err != nil {
			return res, err
		}
	}
	kv, err := js.KeyValue(ctx, bucket) // bound after directOff: a handle keeps the mode it saw
	if err != nil {
		return res, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: cfg.Name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: 20, MaxAckPending: 1000, FilterSubject: subj + ".>",
	})
	if err != nil {
		return res, fmt.Errorf("create consumer %s: %w", cfg.Name, err)
	}
	body := stepBody(cfg.Payload)
	if err := parallel(ctx, cfg.Runs, 32, func(ctx context.Context, i int) error {
		run := "r" + strconv.Itoa(i)
		_, err := js.Publish(ctx, subj+"."+run+".0", body, jetstream.WithMsgID(run+".0"))
		return err
	}); err != nil {
		return res, fmt.Errorf("publish first steps: %w", err)
	}

	p := &pipeline{cfg: cfg, js: js, kv: kv, subj: subj, body: body, done: make(chan struct{})}
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	slots := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	start, cpu := time.Now(), CPUTime()
	wg.Go(func() { p.pull(fetchCtx, cons, slots, &wg) })
	err = waitEnded(ctx, cfg.Ended, int64(cfg.Runs), cfg.Stall, p.done, &p.failed)
	res = Result{Runs: int(cfg.Ended.Load()), Steps: int(cfg.Ended.Load()) * cfg.Steps, Elapsed: time.Since(start), CPU: CPUTime() - cpu}
	stopFetch()
	wg.Wait()
	return res, err
}

// pipeline is one hand-written consumer.
type pipeline struct {
	cfg    PipelineConfig
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	subj   string
	body   []byte
	done   chan struct{}
	once   sync.Once
	failed atomic.Pointer[error]
}

// pull mirrors the worker's loop: a prefetch of the concurrency, one goroutine a step once a
// slot is free.
func (p *pipeline) pull(ctx context.Context, cons jetstream.Consumer, slots chan struct{}, wg *sync.WaitGroup) {
	for range p.cfg.Concurrency {
		slots <- struct{}{}
	}
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(p.cfg.Concurrency), jetstream.PullExpiry(time.Second))
		if err != nil {
			p.fail(err)
			return
		}
		stopped := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				it.Stop()
			case <-stopped:
			}
		}()
		p.drain(ctx, it, slots, wg)
		close(stopped)
		it.Stop()
	}
}

// drain runs the steps it delivers until it fails or ctx ends.
func (p *pipeline) drain(ctx context.Context, it jetstream.MessagesContext, slots chan struct{}, wg *sync.WaitGroup) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-slots:
		}
		msg, err := it.Next()
		if err != nil {
			slots <- struct{}{}
			return
		}
		wg.Go(func() {
			defer func() { slots <- struct{}{} }()
			if err := p.step(ctx, msg); err != nil {
				_ = msg.NakWithDelay(100 * time.Millisecond)
			}
		})
	}
}

// step handles one message: <name>.step.<run>.<i>.
func (p *pipeline) step(ctx context.Context, msg jetstream.Msg) error {
	run, i, ok := parseStep(msg.Subject())
	if !ok {
		return msg.Term()
	}
	if p.cfg.Mode != RawChain {
		key := "node." + run + "." + strconv.Itoa(i)
		if _, err := p.kv.Get(ctx, key); err == nil {
			return msg.Ack() // done already: a redelivery
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		if _, err := p.kv.Create(ctx, key, []byte(`{"status":"done","attempts":1,"dispatch":"d"}`)); err != nil {
			return err
		}
	}
	if i+1 < p.cfg.Steps {
		next := strconv.Itoa(i + 1)
		ack, err := p.js.Publish(ctx, p.subj+"."+run+"."+next, p.body, jetstream.WithMsgID(run+"."+next))
		if err != nil {
			return err
		}
		if ack.Duplicate {
			p.fail(fmt.Errorf("step %s of %s was already stored", next, run))
		}
	} else if p.cfg.Ended.Add(1) == int64(p.cfg.Runs) {
		p.once.Do(func() { close(p.done) })
	}
	return msg.Ack()
}

func (p *pipeline) fail(err error) {
	p.failed.CompareAndSwap(nil, &err)
	p.once.Do(func() { close(p.done) })
}

func parseStep(subject string) (run string, i int, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) < 4 {
		return "", 0, false
	}
	i, err := strconv.Atoi(parts[len(parts)-1])
	return parts[len(parts)-2], i, err == nil
}

// stepBody is an envelope-like body carrying payload bytes of input.
func stepBody(payload int) []byte {
	return []byte(`{"v":1,"input":` + string(Input(payload)) + `}`)
}

// Input returns a JSON object of about n bytes ({} for 0): the run input of a benchmark with
// a payload of n bytes.
func Input(n int) []byte {
	const frame = len(`{"payload":""}`)
	if n <= frame {
		return []byte("{}")
	}
	return []byte(`{"payload":"` + strings.Repeat("x", n-frame) + `"}`)
}

// waitEnded waits until ended reaches want, done closes, or no run ends for stall.
func waitEnded(ctx context.Context, ended *atomic.Int64, want int64, stall time.Duration, done <-chan struct{}, failed *atomic.Pointer[error]) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last, lastAt := ended.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
		case <-t.C:
		}
		if e := failed.Load(); e != nil {
			return *e
		}
		n := ended.Load()
		if n >= want {
			return nil
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return fmt.Errorf("only %d of %d runs ended, and none in the last %s", n, want, stall)
		}
	}
}

// parallel calls fn for 0..n-1 on up to workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// directOff turns direct gets off on a KV stream, as jetflow's setup does for a replicated
// runs bucket, so reads go to the stream leader.
func directOff(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	sc := s.CachedInfo().Config
	if !sc.AllowDirect {
		return nil
	}
	sc.AllowDirect = false
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("update stream %s: %w", stream, err)
	}
	return nil
}

// retryStorage runs create, again up to 4 times 200 ms apart while the server answers that
// it could not create the stream's storage directory: right after the engine's streams were
// deleted (the phase before), the server may still be removing the account's directory.
func retryStorage(ctx context.Context, create func() error) error {
	for attempt := 1; ; attempt++ {
		err := create()
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "could not create storage directory") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// deleteStreams deletes the named streams; missing ones are fine.
func deleteStreams(ctx context.Context, js jetstream.JetStream, names ...string) error {
	var errs []error
	for _, n := range names {
		if err := js.DeleteStream(ctx, n); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
