package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Workflow is the name of the benchmark's workflow.
const Workflow = "bench"

// DefaultSample is how many node states Engine reads for the step latency.
const DefaultSample = 1000

// EngineConfig sizes an engine run. Zero fields take the defaults.
type EngineConfig struct {
	// Names is the installation the run uses (required). Its prefix must be unused: Engine
	// sets it up and deletes every stream and bucket of it when it returns.
	Names workflow.Names
	// Runs is how many runs start (default 2,000).
	Runs int
	// Steps is the length of the linear workflow (default 5).
	Steps int
	// Concurrency is the worker's concurrency (default 64).
	Concurrency int
	// Payload is the size in bytes of every run's input, which every step carries (default 0).
	Payload int
	// Replicas of the streams and buckets (default 1).
	Replicas int
	// Sample is how many node states to read for the step latency (default 1,000).
	Sample int
	// Published and Ended, when set, count the runs started and the runs ended (progress).
	Published, Ended *atomic.Int64
	// Stall is how long to wait without a run ending before giving up (default 1 min).
	Stall time.Duration
	// Logger receives the worker's logs (default: discard).
	Logger *slog.Logger
	// Version is the worker's version in its presence record.
	Version string
	// CPUProfile, when set, receives a CPU profile of the timed part (pprof format).
	CPUProfile io.Writer
	// Map, when set, makes the workflow one noop node with for_each over a list of Map
	// items (each run's input): Steps is then ignored and each item counts as a step. Its
	// max_parallel is 4 × Concurrency (at most 1,000), so the worker's slots bound the
	// items in flight, as they bound the steps of the linear runs, which all wait queued.
	Map int
	// Service, when set, makes every step a service node answered by a Go micro service
	// (nats.go micro) on a connection of its own in this process, as a user's service
	// would answer it, instead of an in-process noop handler: the price of the network hop.
	Service bool
}

// serviceReply is what the benchmark's service answers each step with.
var serviceReply = []byte(`{"ok":true}`)

// WithDefaults returns c with zero fields filled in.
func (c EngineConfig) WithDefaults() EngineConfig {
	c.Runs = cmp.Or(c.Runs, DefaultRuns)
	c.Steps = cmp.Or(c.Steps, DefaultSteps)
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.Replicas = cmp.Or(c.Replicas, 1)
	c.Sample = cmp.Or(c.Sample, DefaultSample)
	c.Stall = cmp.Or(c.Stall, DefaultStall)
	if c.Published == nil {
		c.Published = new(atomic.Int64)
	}
	if c.Ended == nil {
		c.Ended = new(atomic.Int64)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

func (c EngineConfig) validate() error {
	switch {
	case c.Names.Prefix() == "":
		return errors.New("bench: Names is required")
	case c.Runs < 0, c.Steps < 0, c.Concurrency < 0, c.Payload < 0, c.Sample < 0:
		return errors.New("bench: Runs, Steps, Concurrency, Payload and Sample must be positive")
	}
	return nil
}

// Quantiles are the median and the 99th percentile of a latency.
type Quantiles struct {
	P50, P99 time.Duration
}

// EngineResult is what Engine measured.
type EngineResult struct {
	Result
	// Failed counts the runs that ended other than completed.
	Failed int
	// StepLatency is over Sampled node states: from the step's parent's result (for a first
	// step, the worker's start) to its own result, queueing included.
	StepLatency Quantiles
	Sampled     int
	// RunLatency is end.at − max(run created, worker start). Every run is queued before the
	// worker starts, so it includes the wait behind the rest of the batch.
	RunLatency Quantiles
}

// Engine sets up cfg.Names, applies a linear workflow of cfg.Steps noop nodes, starts
// cfg.Runs runs, then starts an in-process worker and times it until every run ended. It
// reads a sample of node states for the step latency, and deletes the installation.
func Engine(ctx context.Context, dial Dialer, cfg EngineConfig) (res EngineResult, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return res, err
	}
	n := cfg.Names
	nc, err := dial("jetflow bench producer")
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err = errors.Join(err, Delete(dctx, js, n))
	}()
	if _, err := setup.Run(ctx, js, setup.Config{Names: n, Replicas: cfg.Replicas}); err != nil {
		return res, fmt.Errorf("setup %s: %w", n.Prefix(), err)
	}
	store, err := checkpoint.Open(ctx, js, n)
	if err != nil {
		return res, err
	}
	wf := workflow.New(Workflow)
	input := Input(cfg.Payload)
	if cfg.Map > 0 {
		each := wf.Node("each", "noop")
		each.ForEach = "${{ input.items }}"
		each.MaxParallel = min(4*cfg.Concurrency, workflow.MaxParallelLimit)
		cfg.Steps = cfg.Map
		items := make([]int, cfg.Map)
		for i := range items {
			items[i] = i
		}
		if input, err = json.Marshal(map[string]any{"items": items}); err != nil {
			return res, err
		}
	}
	typ := "noop"
	if cfg.Service {
		typ = workflow.ServiceType
		stop, err := startService(dial, serviceSubject(n))
		if err != nil {
			return res, err
		}
		defer stop()
	}
	for i := range cfg.Steps * boolInt(cfg.Map == 0) {
		var nd *workflow.Node
		if i == 0 {
			nd = wf.Node(nodeName(i), typ)
		} else {
			nd = wf.Node(nodeName(i), typ, nodeName(i-1))
		}
		if cfg.Service {
			nd.With = map[string]any{"subject": serviceSubject(n)}
		}
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		return res, fmt.Errorf("apply workflow: %w", err)
	}
	prod := producer.New(js, store, producer.Config{Names: n})
	ids := make([]string, cfg.Runs)
	if err := parallel(ctx, cfg.Runs, 32, func(ctx context.Context, i int) error {
		id, err := prod.Start(ctx, Workflow, input, producer.StartOptions{})
		ids[i] = id
		cfg.Published.Add(1)
		return err
	}); err != nil {
		return res, fmt.Errorf("start runs: %w", err)
	}

	ends := newEndCounter(cfg.Ended, cfg.Runs)
	watcher, err := store.KV().Watch(ctx, workflow.EndKey("*"), jetstream.UpdatesOnly())
	if err != nil {
		return res, fmt.Errorf("watch ends: %w", err)
	}
	defer func() { _ = watcher.Stop() }()
	var watching sync.WaitGroup
	watching.Go(func() { ends.read(watcher.Updates()) })

	stopWorker, workerDone, failed, err := startWorker(ctx, dial, cfg)
	if err != nil {
		return res, err
	}
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			stopWorker()
			return res, fmt.Errorf("cpu profile: %w", err)
		}
	}
	start, cpu := time.Now(), CPUTime()
	err = waitEnded(ctx, cfg.Ended, int64(cfg.Runs), cfg.Stall, anyClosed(ends.done, workerDone), failed)
	elapsed, cpu := time.Since(start), CPUTime()-cpu
	if cfg.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	stopWorker()
	_ = watcher.Stop()
	watching.Wait()
	got := ends.snapshot()
	res.Result = Result{Runs: len(got), Steps: len(got) * cfg.Steps, Elapsed: elapsed, CPU: cpu}
	if err != nil {
		return res, err
	}
	runLat := make([]time.Duration, 0, len(got))
	for _, e := range got {
		if e.Status != checkpoint.EndCompleted {
			res.Failed++
		}
		runLat = append(runLat, e.At.Sub(start))
	}
	res.RunLatency = quantiles(runLat)
	if cfg.Map > 0 { // item states are not node states: no step latency sample
		if res.Failed > 0 {
			return res, fmt.Errorf("%d of %d runs did not complete", res.Failed, len(got))
		}
		return res, nil
	}
	stepLat, err := sampleSteps(ctx, store, ids, cfg.Steps, cfg.Sample, start)
	if err != nil {
		return res, err
	}
	res.Sampled, res.StepLatency = len(stepLat), quantiles(stepLat)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d of %d runs did not complete", res.Failed, len(got))
	}
	return res, nil
}

// startWorker runs a noop worker on its own connection. stop cancels it and waits; done
// closes when it returns, and failed then holds why.
func startWorker(ctx context.Context, dial Dialer, cfg EngineConfig) (stop func(), done chan struct{}, failed *atomic.Pointer[error], err error) {
	nc, err := dial("jetflow bench worker")
	if err != nil {
		return nil, nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	store, err := checkpoint.Open(ctx, js, cfg.Names)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	typ := "noop"
	if cfg.Service {
		typ = workflow.ServiceType
	}
	w, err := consumer.New(js, store, consumer.Config{
		Names: cfg.Names, ID: cfg.Names.Prefix() + "-worker", Types: []string{typ},
		Concurrency: cfg.Concurrency, DrainTimeout: 5 * time.Second, Logger: cfg.Logger, Version: cfg.Version,
	})
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	if cfg.Service {
		w.Handle(typ, nodes.Service(nc))
	} else {
		w.Handle(typ, nodes.Noop)
	}
	wctx, cancel := context.WithCancel(ctx)
	done = make(chan struct{})
	failed = new(atomic.Pointer[error])
	go func() {
		defer close(done)
		err := w.Run(wctx)
		if wctx.Err() == nil {
			err = fmt.Errorf("worker stopped: %w", cmp.Or(err, errors.New("no error")))
			failed.Store(&err)
		}
	}()
	return func() { cancel(); <-done; nc.Close() }, done, failed, nil
}

// serviceSubject is the subject of the benchmark's service under names.
func serviceSubject(n workflow.Names) string { return n.Prefix() + ".svc.step" }

// startService adds the benchmark's micro service on a connection of its own; stop removes it.
func startService(dial Dialer, subject string) (stop func(), err error) {
	nc, err := dial("jetflow bench service")
	if err != nil {
		return nil, err
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "jetflow-bench", Version: "1.0.0"})
	if err == nil {
		err = svc.AddEndpoint("step", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(serviceReply) }),
			micro.WithEndpointSubject(subject))
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench service: %w", err)
	}
	return func() { _ = svc.Stop(); nc.Close() }, nil
}

// endCounter collects the end records the watch delivers.
type endCounter struct {
	ended *atomic.Int64
	want  int
	done  chan struct{}

	mu   sync.Mutex
	ends map[string]checkpoint.End
}

func newEndCounter(ended *atomic.Int64, want int) *endCounter {
	return &endCounter{ended: ended, want: want, done: make(chan struct{}), ends: make(map[string]checkpoint.End, want)}
}

func (c *endCounter) read(updates <-chan jetstream.KeyValueEntry) {
	closed := false
	for e := range updates {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var end checkpoint.End
		if json.Unmarshal(e.Value(), &end) != nil {
			continue
		}
		c.mu.Lock()
		if _, seen := c.ends[e.Key()]; !seen {
			c.ends[e.Key()] = end
			c.ended.Add(1)
		}
		n := len(c.ends)
		c.mu.Unlock()
		if n >= c.want && !closed {
			closed = true
			close(c.done)
		}
	}
}

func (c *endCounter) snapshot() []checkpoint.End {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]checkpoint.End, 0, len(c.ends))
	for _, e := range c.ends {
		out = append(out, e)
	}
	return out
}

// sampleSteps reads the node states of runs spread over ids, up to sample states in all,
// and returns each step's latency: from the moment it could run (its parent's result
// recorded; for a first step, start) to its own result recorded. It includes the wait in
// the queue behind other ready steps, the delivery, the KV read, the handler and the write.
func sampleSteps(ctx context.Context, store *checkpoint.Store, ids []string, steps, sample int, start time.Time) ([]time.Duration, error) {
	if len(ids) == 0 || steps == 0 || sample == 0 {
		return nil, nil
	}
	runs := ids[:0:0]
	for j, k := 0, min(len(ids), (sample+steps-1)/steps); j < k; j++ {
		runs = append(runs, ids[j*len(ids)/k])
	}
	ended := make([][]time.Time, len(runs))
	err := parallel(ctx, len(runs), 16, func(ctx context.Context, j int) error {
		ended[j] = make([]time.Time, steps)
		for i := range steps {
			st, _, err := store.Node(ctx, runs[j], nodeName(i))
			if err != nil {
				return err
			}
			if st == nil || st.EndedAt.IsZero() {
				return fmt.Errorf("node %s of run %s has no recorded end", nodeName(i), runs[j])
			}
			ended[j][i] = st.EndedAt
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, e := range ended {
		for i := range e {
			if len(out) == sample {
				return out, nil
			}
			ready := start
			if i > 0 {
				ready = e[i-1]
			}
			out = append(out, max(e[i].Sub(ready), 0))
		}
	}
	return out, nil
}

// quantiles returns the nearest-rank median and 99th percentile of d (which it sorts).
func quantiles(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return Quantiles{P50: at(0.50), P99: at(0.99)}
}

// Delete deletes every stream and bucket of the installation n; missing ones are fine.
func Delete(ctx context.Context, js jetstream.JetStream, n workflow.Names) error {
	return deleteStreams(ctx, js, n.StepsStream(), n.DLQStream(), n.AdvisoryStream(),
		"KV_"+n.RunsBucket(), "KV_"+n.WorkflowsBucket(), "KV_"+n.BreakersBucket(), "KV_"+n.WorkersBucket(), "KV_"+n.CacheBucket(),
		"OBJ_"+n.BlobsBucket())
}

func nodeName(i int) string { return fmt.Sprintf("s%d", i) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// anyClosed returns a channel that closes when any of cs does.
func anyClosed(cs ...<-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	var once sync.Once
	for _, c := range cs {
		go func() {
			select {
			case <-c:
				once.Do(func() { close(out) })
			case <-out:
			}
		}()
	}
	return out
}

// PipelineName is the name Pipeline should use next to an engine installation n, so the
// deletion of one never touches the other.
func PipelineName(n workflow.Names, m Mode) string {
	return strings.ReplaceAll(n.Prefix(), "-", "_") + "_" + strings.Fields(m.String())[0]
}
