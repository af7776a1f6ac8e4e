// Package jetflowtest checks that a handler's side effects stay idempotent under jetflow's
// at-least-once delivery. It runs the handler in a real worker on an embedded NATS server and
// makes every step hit the cases a production cluster sees now and then: the same step run
// twice at once (two workers holding copies), the handler run again after its side effect
// but before its result was recorded (a worker killed between the two), and retries that come
// back out of order, interleaved with other steps. Afterwards it asks the handler's own world
// how many side effects each idempotency key produced: exactly one is idempotent.
package jetflowtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Options tunes Check. Zero fields take the defaults.
type Options struct {
	// Steps is how many steps (runs of a one-node workflow) to drive (default 20).
	Steps int
	// Input returns the run input of step i (default {"i": i}); the handler sees it as
	// {"input": <it>, "nodes": {}}.
	Input func(i int) any
	// Timeout bounds the whole check (default 2 minutes).
	Timeout time.Duration
}

// Report is what Check saw.
type Report struct {
	// Steps driven, and how many times the handler was called in all.
	Steps, Executions int
	// Effects is the count of side effects per idempotency key, as effects() reported it.
	Effects map[string]int
	// Duplicated lists keys with more than one side effect; Missing, keys with none.
	Duplicated, Missing []string
}

// OK reports whether every step produced exactly one side effect.
func (r *Report) OK() bool { return len(r.Duplicated) == 0 && len(r.Missing) == 0 }

// String summarises the report on one line.
func (r *Report) String() string {
	if r.OK() {
		return fmt.Sprintf("idempotent: %d steps, %d handler calls, one side effect each", r.Steps, r.Executions)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "NOT idempotent: %d steps, %d handler calls", r.Steps, r.Executions)
	if len(r.Duplicated) > 0 {
		fmt.Fprintf(&b, "; %d keys with repeated side effects (e.g. %s ×%d)", len(r.Duplicated), r.Duplicated[0], r.Effects[r.Duplicated[0]])
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(&b, "; %d keys with no side effect (e.g. %s)", len(r.Missing), r.Missing[0])
	}
	return b.String()
}

// errLostCheckpoint stands for a worker that died after the side effect, before the result
// was recorded: the step is delivered again.
var errLostCheckpoint = errors.New("jetflowtest: the result of this call was lost (simulated crash before the checkpoint)")

// Check drives handler through the stress cases and returns what effects reports: the number
// of side effects each idempotency key (Step.IdempotencyKey) produced in the handler's world.
// An error means the check itself could not run (the report is then nil).
func Check(ctx context.Context, handler consumer.HandlerFunc, effects func() map[string]int, opts Options) (_ *Report, err error) {
	opts.Steps = cmp.Or(opts.Steps, 20)
	opts.Timeout = cmp.Or(opts.Timeout, 2*time.Minute)
	if opts.Input == nil {
		opts.Input = func(i int) any { return map[string]int{"i": i} }
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "jetflowtest")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	srv, err := embedded.Start(embedded.Options{StoreDir: dir, Port: -1})
	if err != nil {
		return nil, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	names := workflow.MustNames("jetflowtest")
	if _, err := setup.Run(ctx, js, setup.Config{Names: names, Types: []setup.ConsumerConfig{{Type: "under-test"}}}); err != nil {
		return nil, err
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	wf := workflow.New("idempotency")
	jitter := 1.0
	wf.Node("step", "under-test").WithRetry(workflow.Retry{MaxAttempts: 5, Initial: workflow.Duration(20 * time.Millisecond),
		Max: workflow.Duration(200 * time.Millisecond), Jitter: &jitter})
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		return nil, err
	}

	var mu sync.Mutex
	calls := map[string]int{}
	total := 0
	stressed := func(ctx context.Context, s *consumer.Step) (any, error) {
		mu.Lock()
		calls[s.IdempotencyKey]++
		n := calls[s.IdempotencyKey]
		mu.Unlock()
		switch n {
		case 1:
			// Two workers hold copies of the step and run it at the same time; then the
			// result is lost as if the worker died before the checkpoint.
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = handler(ctx, s) })
			_, _ = handler(ctx, s)
			wg.Wait()
			mu.Lock()
			total += 2
			mu.Unlock()
			return nil, errLostCheckpoint
		default:
			// The retry, after a random backoff: out of order among the other steps.
			mu.Lock()
			total++
			mu.Unlock()
			return handler(ctx, s)
		}
	}
	w, err := consumer.New(js, store, consumer.Config{Names: names, Concurrency: 8, PollWait: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	w.Handle("under-test", stressed)
	wctx, stopWorker := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stopWorker()
		if werr := <-done; werr != nil && !errors.Is(werr, context.Canceled) && err == nil {
			err = fmt.Errorf("worker: %w", werr)
		}
	}()

	p := producer.New(js, store, producer.Config{Names: names})
	order := rand.Perm(opts.Steps)
	ids := make([]string, 0, opts.Steps)
	for _, i := range order {
		in, err := json.Marshal(opts.Input(i))
		if err != nil {
			return nil, fmt.Errorf("input of step %d: %w", i, err)
		}
		id, err := p.Start(ctx, "idempotency", in, producer.StartOptions{ID: fmt.Sprintf("step-%04d", i)})
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := store.WaitEnd(ctx, id); err != nil {
			return nil, fmt.Errorf("step %s did not finish: %w", id, err)
		}
	}
	rep := &Report{Steps: opts.Steps, Effects: effects()}
	mu.Lock()
	rep.Executions = total
	mu.Unlock()
	for _, id := range ids {
		key := workflow.IdempotencyKey(id, "step")
		switch n := rep.Effects[key]; {
		case n == 0:
			rep.Missing = append(rep.Missing, key)
		case n > 1:
			rep.Duplicated = append(rep.Duplicated, key)
		}
	}
	slices.Sort(rep.Duplicated)
	slices.Sort(rep.Missing)
	return rep, nil
}
