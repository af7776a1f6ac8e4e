package consumer

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// DESIGN.md, "Happy path cost" and "The promise": a worker fetches about its free slots, so a
// step is never held delivered-but-unstarted past its ack wait while the worker's slots are
// busy. Held too long, the server delivers it again to another worker, and the first worker
// later runs its stale buffered copy as well: two live handlers for one key.
//
// The tests below run handlers (4–7 s) much longer than the consumer's ack wait (2 s) with a
// backlog on two workers at concurrency 2, the shape of the report from outside (3 of 20 node
// keys ran two live handlers at once on the two healthy workers).

const (
	longRuns        = 10
	longConcurrency = 2
)

// longStepWorkflow is two long steps in a row, a then b.
func longStepWorkflow(name string) *workflow.Workflow {
	wf := workflow.New(name)
	wf.Node("a", "long")
	wf.Node("b", "long", "a")
	return wf
}

// longStepDuration is how long the handler of the step with idempotency key runs: 4 to 7 s,
// 5.5 s on average, fixed per key. Steps of one length would start and end together in
// both slots of a worker, and a step fetched when one slot frees would be taken by the other
// at once; with lengths apart by more than the ack wait, it waits in the worker.
func longStepDuration(key string) time.Duration {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return 4*time.Second + time.Duration(h.Sum32()%7)*500*time.Millisecond
}

// sleepStep waits d or until ctx ends, as a handler that respects its context does.
func sleepStep(ctx context.Context, s *Step, d time.Duration) (any, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return s.Node, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// liveCounter records, per idempotency key, how many handlers are live at once (the most
// seen) and how many ran in all. The workers of one test process share one.
type liveCounter struct {
	mu      sync.Mutex
	live    map[string]int
	maxLive map[string]int
	runs    map[string]int
}

func newLiveCounter() *liveCounter {
	return &liveCounter{live: map[string]int{}, maxLive: map[string]int{}, runs: map[string]int{}}
}

// begin counts a handler of key live; the returned func counts it ended.
func (c *liveCounter) begin(key string) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs[key]++
	c.live[key]++
	c.maxLive[key] = max(c.maxLive[key], c.live[key])
	return func() {
		c.mu.Lock()
		c.live[key]--
		c.mu.Unlock()
	}
}

func (c *liveCounter) get(key string) (maxLive, runs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxLive[key], c.runs[key]
}

// waitEnds waits until every run has ended or timeout passes, and returns the ends seen.
func (f *fixture) waitEnds(ids []string, timeout time.Duration) map[string]*checkpoint.End {
	f.t.Helper()
	ends := map[string]*checkpoint.End{}
	deadline := time.Now().Add(timeout)
	for len(ends) < len(ids) && time.Now().Before(deadline) {
		for _, id := range ids {
			if ends[id] != nil {
				continue
			}
			if e, _, err := f.store.End(context.Background(), id); err == nil && e != nil {
				ends[id] = e
			}
		}
		if len(ends) < len(ids) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ends
}

// checkEnds reports every run that did not end completed.
func checkEnds(t *testing.T, ids []string, ends map[string]*checkpoint.End, within time.Duration) {
	t.Helper()
	for _, id := range ids {
		switch e := ends[id]; {
		case e == nil:
			t.Errorf("run %s did not end within %s", id, within)
		case e.Status != checkpoint.EndCompleted:
			t.Errorf("run %s ended %s (%s), want completed", id, e.Status, e.Reason)
		}
	}
}

// TestLongStepsRunOnceOnTwoWorkers: two workers at concurrency 2, a 2 s ack wait, a backlog
// of 10 runs of two 4–7 s steps, no fault. No key ever has two live handlers, every handler
// runs exactly once, no crash is counted, nothing reaches the DLQ, every run completes.
func TestLongStepsRunOnceOnTwoWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, "long")
	wf := longStepWorkflow("longsteps")
	f.apply(wf)
	live := newLiveCounter()
	handler := func(ctx context.Context, s *Step) (any, error) {
		defer live.begin(s.IdempotencyKey)()
		return sleepStep(ctx, s, longStepDuration(s.IdempotencyKey))
	}
	for range 2 {
		f.worker(Config{Concurrency: longConcurrency}, func(w *Worker) { w.Handle("long", handler) })
	}
	var ids []string
	for i := range longRuns {
		ids = append(ids, f.start("longsteps", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// 20 steps of 4–7 s on 4 slots: about 30 s of work.
	const within = 80 * time.Second
	ends := f.waitEnds(ids, within)
	checkEnds(t, ids, ends, within)

	var overlapping []string
	for _, id := range ids {
		for _, n := range wf.Nodes {
			key := workflow.IdempotencyKey(id, n.Name)
			maxLive, runs := live.get(key)
			if maxLive > 1 {
				overlapping = append(overlapping, fmt.Sprintf("%s (%d at once)", key, maxLive))
			}
			if runs != 1 {
				t.Errorf("node %s: the handler ran %d times, want exactly once", key, runs)
			}
			if st := f.node(id, n.Name); st == nil {
				t.Errorf("node %s has no state", key)
			} else if st.Crashes != 0 {
				t.Errorf("node %s: %d crashes counted with no crash (status %s, attempts %d), want 0", key, st.Crashes, st.Status, st.Attempts)
			}
		}
	}
	if len(overlapping) > 0 {
		t.Errorf("%d of %d node keys ran two live handlers at once: %s", len(overlapping), len(ids)*len(wf.Nodes), strings.Join(overlapping, ", "))
	}
	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var what []string
		for _, e := range entries {
			what = append(what, fmt.Sprintf("%s.%s: %s", e.RunID, e.Node, e.Reason))
		}
		t.Errorf("the DLQ holds %d entries, want none: %s", len(entries), strings.Join(what, "; "))
	}
}

// longStepWorkerEnv makes the test binary a worker process of the "long" type for
// TestLongStepsNeverOverlapAcrossAKill (see longStepWorker).
const longStepWorkerEnv = "JETFLOW_TEST_LONGSTEP_WORKER"

// ledgerNote appends one line to the ledger at path. Every line is one write to a file opened
// with O_APPEND, so the lines of several processes interleave whole, in the order written.
func ledgerNote(path, format string, args ...any) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(fmt.Sprintf(format, args...) + "\n")
}

// ledgerHandler is the long-step handler of the kill test: it notes "start <key> <pid>" and
// "end <key> <pid>" around the step in the ledger.
func ledgerHandler(ledger string) HandlerFunc {
	pid := os.Getpid()
	return func(ctx context.Context, s *Step) (any, error) {
		ledgerNote(ledger, "start %s %d", s.IdempotencyKey, pid)
		defer ledgerNote(ledger, "end %s %d", s.IdempotencyKey, pid)
		return sleepStep(ctx, s, longStepDuration(s.IdempotencyKey))
	}
}

// longStepWorker runs a worker of the "long" type at concurrency 2 until SIGTERM. NATS_URL
// and JETFLOW_LEDGER say where to connect and what to append to.
func longStepWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	names := workflow.MustNames("jetflow")
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w, err := New(js, store, Config{Names: names, Concurrency: longConcurrency, PollWait: 200 * time.Millisecond, DrainTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w.Handle("long", ledgerHandler(os.Getenv("JETFLOW_LEDGER")))
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startLongStepWorker runs this test binary as a long-step worker process; it is killed at
// test end.
func (f *fixture) startLongStepWorker(ledger string) *exec.Cmd {
	f.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), longStepWorkerEnv+"=1", "NATS_URL="+f.srv.ClientURL(), "JETFLOW_LEDGER="+ledger)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// ledgerLife is what a ledger of start, end and kill lines says about each key.
type ledgerLife struct {
	maxLive map[string]int // the most handlers live at once in processes not killed
	starts  map[string]int // handlers started
	ended   int            // handlers ended, in all
	live    map[string]map[string]int
}

// replayLedger replays the ledger's lines in order. "kill <pid>" is written just before the
// process is sent SIGKILL: from that line on its handlers are dead, and whatever it writes
// after it (in the instant before the signal lands) is ignored.
func replayLedger(lines []string) *ledgerLife {
	l := &ledgerLife{maxLive: map[string]int{}, starts: map[string]int{}, live: map[string]map[string]int{}}
	killed := map[string]bool{}
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "kill":
			killed[f[1]] = true
			for _, pids := range l.live {
				delete(pids, f[1])
			}
		case len(f) == 3 && (f[0] == "start" || f[0] == "end"):
			key, pid := f[1], f[2]
			if killed[pid] {
				continue
			}
			if l.live[key] == nil {
				l.live[key] = map[string]int{}
			}
			if f[0] == "end" {
				l.live[key][pid]--
				l.ended++
				continue
			}
			l.live[key][pid]++
			l.starts[key]++
			n := 0
			for _, c := range l.live[key] {
				n += c
			}
			l.maxLive[key] = max(l.maxLive[key], n)
		}
	}
	return l
}

// liveIn reports whether process pid has a handler live.
func (l *ledgerLife) liveIn(pid string) bool {
	for _, pids := range l.live {
		if pids[pid] > 0 {
			return true
		}
	}
	return false
}

// TestLongStepsNeverOverlapAcrossAKill: the same backlog of long steps on two workers, one an
// in-process worker, the other a worker process that is SIGKILLed mid-way, while it runs a
// handler, and started again. No key ever has two live handlers among the live processes
// (the killed process's handlers are dead), and every run completes.
func TestLongStepsNeverOverlapAcrossAKill(t *testing.T) {
	if testing.Short() {
		t.Skip("about 40 s of long steps")
	}
	t.Parallel()
	f := setup(t, "long")
	wf := longStepWorkflow("longkill")
	f.apply(wf)
	ledger := filepath.Join(t.TempDir(), "ledger")
	f.worker(Config{Concurrency: longConcurrency}, func(w *Worker) { w.Handle("long", ledgerHandler(ledger)) })
	victim := f.startLongStepWorker(ledger)
	var ids []string
	for i := range longRuns {
		ids = append(ids, f.start("longkill", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// Mid-way: a quarter of the 20 handlers have ended, and the victim runs one now.
	victimPid := strconv.Itoa(victim.Process.Pid)
	natstest.Eventually(t, 60*time.Second, func() bool {
		l := replayLedger(readLines(ledger))
		return l.ended >= 5 && l.liveIn(victimPid)
	}, "the worker process never ran a step mid-way")
	ledgerNote(ledger, "kill %s", victimPid)
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	f.startLongStepWorker(ledger)

	const within = 80 * time.Second
	ends := f.waitEnds(ids, within)
	checkEnds(t, ids, ends, within)

	l := replayLedger(readLines(ledger))
	var overlapping []string
	for _, id := range ids {
		for _, n := range wf.Nodes {
			key := workflow.IdempotencyKey(id, n.Name)
			if l.maxLive[key] > 1 {
				overlapping = append(overlapping, fmt.Sprintf("%s (%d at once)", key, l.maxLive[key]))
			}
			if l.starts[key] == 0 {
				t.Errorf("node %s: no handler run in the ledger", key)
			}
		}
	}
	if len(overlapping) > 0 {
		slices.Sort(overlapping)
		t.Errorf("%d of %d node keys ran two live handlers at once in live processes: %s", len(overlapping), len(ids)*len(wf.Nodes), strings.Join(overlapping, ", "))
	}
}
