//go:build linux

package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The scenarios, each bounded in runs, faults and time. quick_test.go runs four of them with
// few runs on one node (go test ./...); every scenario in the table below runs at its full
// size in TestChaos (build tag chaos) and at its quick size in TestChaosEveryScenarioQuick
// (build tag chaosquick, which CI runs).

// size is how big a scenario runs.
type size struct {
	runs    int           // runs started
	workers int           // worker processes kept alive
	faults  int           // faults injected (at most)
	gap     time.Duration // between two starts
	within  time.Duration // how long the runs may take to end once started
}

// scenario is one entry of the table: a name, the function, and its two sizes.
type scenario struct {
	name  string
	run   func(t *testing.T, sz size) *report
	full  size // TestChaos (build tag chaos)
	quick size // TestChaosEveryScenarioQuick (build tag chaosquick, CI): a few runs, a fault or two
}

// scenarios is every chaos scenario. A scenario added here runs in the long suite and, at its
// quick size, in CI; one without a quick size fails TestChaosEveryScenarioQuick.
var scenarios = []scenario{
	{name: "1-worker-kill", run: scenarioWorkerKill,
		full:  size{runs: 120, workers: 4, faults: 20, gap: 150 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 20, workers: 3, faults: 5, gap: 150 * time.Millisecond, within: 90 * time.Second}},
	{name: "2-zombie", run: scenarioZombie,
		full:  size{runs: 60, workers: 3, faults: 4, gap: 400 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 12, workers: 3, faults: 1, gap: 400 * time.Millisecond, within: 90 * time.Second}},
	{name: "3-hang", run: scenarioHang,
		full:  size{runs: 20, workers: 3, gap: 200 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 4, workers: 3, gap: 200 * time.Millisecond, within: 90 * time.Second}},
	{name: "4-poison", run: scenarioPoison,
		full:  size{runs: 60, workers: 3, faults: 3, gap: 150 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 12, workers: 3, faults: 1, gap: 150 * time.Millisecond, within: 90 * time.Second}},
	{name: "5-server-kill", run: scenarioServerKill,
		full:  size{runs: 80, workers: 3, faults: 3, gap: 200 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 25, workers: 3, faults: 1, gap: 200 * time.Millisecond, within: 90 * time.Second}},
	{name: "6-leader-kill", run: scenarioLeaderKill,
		full:  size{runs: 80, workers: 3, faults: 2, gap: 200 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 25, workers: 3, faults: 1, gap: 200 * time.Millisecond, within: 2 * time.Minute}},
	{name: "7-flaky", run: scenarioFlaky,
		full:  size{runs: 100, workers: 3, gap: 100 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 20, workers: 3, gap: 100 * time.Millisecond, within: 90 * time.Second}},
	{name: "8-duplicates", run: scenarioDuplicates,
		full:  size{runs: 60, workers: 3, faults: 200, gap: 150 * time.Millisecond, within: 4 * time.Minute},
		quick: size{runs: 12, workers: 3, faults: 40, gap: 150 * time.Millisecond, within: 90 * time.Second}},
	// Issue #11, finding 3: handlers three times the ack wait, behind a backlog.
	{name: "9-long-steps", run: scenarioLongSteps,
		full:  size{runs: 16, workers: 2, faults: 2, within: 3 * time.Minute},
		quick: size{runs: 10, workers: 2, faults: 1, within: 2 * time.Minute}}, // 6 runs did not fail on 6ef5e29
	// Issue #11, finding 4: the runs bucket refuses writes for a while.
	{name: "10-runs-outage", run: scenarioRunsOutage,
		full:  size{runs: 20, workers: 2, faults: 1, within: 3 * time.Minute},
		quick: size{runs: 8, workers: 2, faults: 1, within: 2 * time.Minute}},
	// Issue #14: a for_each over a run-time list while workers are killed. runs is the
	// number of items here (one run).
	{name: "11-map", run: scenarioMap,
		full:  size{runs: 10000, workers: 3, faults: 8, within: 10 * time.Minute},
		quick: size{runs: 300, workers: 3, faults: 2, within: 3 * time.Minute}},
}

// runScenarios runs every scenario of the table as a subtest, at the size pick chooses.
func runScenarios(t *testing.T, pick func(scenario) size) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			sz := pick(sc)
			if sz.runs == 0 || sz.workers == 0 || sz.within == 0 {
				t.Fatalf("scenario %s has no size here (runs, workers and within are required): %+v", sc.name, sz)
			}
			sc.run(t, sz)
		})
	}
}

// diamond is a → (b, c) → d: a join, so joins are tested under the faults too.
func diamond(extra map[string]string) []node {
	env := func(sleep string) map[string]string {
		m := map[string]string{"SLEEP": sleep}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	return []node{
		{name: "a", env: env("0.3")},
		{name: "b", needs: []string{"a"}, env: env("0.5")},
		{name: "c", needs: []string{"a"}, env: env("0.2")},
		{name: "d", needs: []string{"b", "c"}, env: env("0.3")},
	}
}

// scenarioWorkerKill (1): a worker SIGKILLed every few seconds — one running a handler when
// there is one, never one running a step already interrupted — and replaced at once, under
// a stream of runs.
func scenarioWorkerKill(t *testing.T, sz size) *report {
	r := newRig(t, "worker-kill", rigOptions{})
	r.applyWorkflow("diamond", diamond(nil)...)
	r.keepWorkers(sz.workers)
	wait := every(2*time.Second, sz.faults, time.Now().Add(sz.within), func(int) {
		if w := r.victim(true); w != nil {
			r.killWorker(w)
		}
	})
	r.startRuns("diamond", sz.runs, sz.gap, "")
	wait()
	return r.check(checkOptions{endWithin: sz.within})
}

// scenarioZombie (2): a worker running a handler is SIGSTOPped for three ack waits, then
// SIGCONTed: its steps were redelivered to others meanwhile, and it wakes up holding stale
// deliveries, results and acks.
func scenarioZombie(t *testing.T, sz size) *report {
	r := newRig(t, "zombie", rigOptions{})
	r.applyWorkflow("chain",
		node{name: "a", env: map[string]string{"SLEEP": "0.5"}},
		node{name: "b", needs: []string{"a"}, env: map[string]string{"SLEEP": "1"}},
		node{name: "c", needs: []string{"b"}, env: map[string]string{"SLEEP": "0.5"}})
	r.keepWorkers(sz.workers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.startRuns("chain", sz.runs, sz.gap, "")
	}()
	// Stop a busy worker now and then while runs are being started.
	for i := 0; i < sz.faults; {
		select {
		case <-done:
			i = sz.faults
			continue
		case <-time.After(time.Second):
		}
		if w := r.victim(false); w != nil {
			r.stopWorker(w, 3*ackWait)
			i++
		}
	}
	<-done
	return r.check(checkOptions{endWithin: sz.within})
}

// scenarioHang (3): handlers that hang ignoring their context, beside healthy nodes. In
// workflow "hang", an exec node whose first run ignores SIGTERM and sleeps far past its 2 s
// timeout; in "hanggo", a Go handler (the hang worker) whose first run sleeps 20 s past its
// 1 s timeout, ignoring its context.
func scenarioHang(t *testing.T, sz size) *report {
	r := newRig(t, "hang", rigOptions{})
	r.applyWorkflow("hang",
		node{name: "a", env: map[string]string{"SLEEP": "0.1"}},
		node{name: "stuck", needs: []string{"a"}, timeout: "2s", retry: "{max_attempts: 3, initial: 100ms}",
			env: map[string]string{"HANG_FIRST": "1"}},
		node{name: "c", needs: []string{"stuck"}, env: map[string]string{"SLEEP": "0.1"}})
	r.applyWorkflow("hanggo",
		node{name: "a", env: map[string]string{"SLEEP": "0.1"}},
		node{name: "gostuck", typ: "hang", needs: []string{"a"}, timeout: "1s"},
		node{name: "c", needs: []string{"gostuck"}, env: map[string]string{"SLEEP": "0.1"}})
	r.keepWorkers(sz.workers)
	r.startHangWorker(20 * time.Second)
	r.startRuns("hang", sz.runs, sz.gap, "")
	r.startRuns("hanggo", max(sz.runs/4, 1), sz.gap, "")
	rep := r.check(checkOptions{endWithin: sz.within})
	// Every run ended: no handler may still be running (the hung first runs included).
	if left := r.tagged(); len(left) > 0 {
		rep.problem("%d exec processes still run after every run ended: %v", len(left), left)
		t.Errorf("hung handlers outlived their runs: pids %v", left)
	}
	return rep
}

// scenarioPoison (4): a node that SIGKILLs the worker running it, beside healthy runs; the
// test restarts every worker that dies. The poison runs must fail with their step in the DLQ,
// every healthy run must complete.
func scenarioPoison(t *testing.T, sz size) *report {
	r := newRig(t, "poison", rigOptions{})
	r.poison = true
	r.applyWorkflow("healthy", diamond(nil)...)
	r.applyWorkflow("poison", node{name: "kill-worker", env: map[string]string{"POISON": "1"}})
	r.keepWorkers(sz.workers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.startRuns("healthy", sz.runs, sz.gap, "")
	}()
	time.Sleep(sz.gap * time.Duration(sz.runs) / 4)
	r.startRuns("poison", sz.faults, sz.gap*4, "kill-worker")
	<-done
	return r.check(checkOptions{endWithin: sz.within})
}

// scenarioServerKill (5): the (single) nats-server SIGKILLed mid-run, a few times, and
// restarted on the same store two seconds later.
func scenarioServerKill(t *testing.T, sz size) *report {
	r := newRig(t, "server-kill", rigOptions{})
	r.applyWorkflow("diamond", diamond(nil)...)
	r.keepWorkers(sz.workers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.startRuns("diamond", sz.runs, sz.gap, "")
	}()
	deadline := time.Now().Add(sz.within)
	for i := 0; i < sz.faults && time.Now().Before(deadline); i++ {
		time.Sleep(4 * time.Second)
		if err := r.killServer(0, 2*time.Second, faultServerKill); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	return r.check(checkOptions{endWithin: sz.within})
}

// scenarioLeaderKill (6): a 3-node cluster at R3; the steps stream's leader is SIGKILLed
// mid-run and restarted three seconds later, a few times, each once the cluster is whole.
func scenarioLeaderKill(t *testing.T, sz size) *report {
	r := newRig(t, "leader-kill", rigOptions{cluster: true})
	r.applyWorkflow("diamond", diamond(nil)...)
	r.keepWorkers(sz.workers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.startRuns("diamond", sz.runs, sz.gap, "")
	}()
	deadline := time.Now().Add(sz.within)
	for i := 0; i < sz.faults && time.Now().Before(deadline); i++ {
		time.Sleep(4 * time.Second)
		leader, err := r.stepsLeader()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.killServer(leader, 3*time.Second, faultLeaderKill); err != nil {
			t.Fatal(err)
		}
		r.waitWhole(time.Minute)
	}
	<-done
	return r.check(checkOptions{endWithin: sz.within})
}

// waitWhole waits (bounded) until the steps stream has a leader and every replica is current.
func (r *rig) waitWhole(within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		s, err := r.js.Stream(ctx, r.names.StepsStream())
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && len(info.Cluster.Replicas) == len(r.servers)-1 {
			whole := true
			for _, p := range info.Cluster.Replicas {
				whole = whole && p.Current && !p.Offline
			}
			if whole {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Logf("steps stream not whole after %s: err %v, cluster %s", within, err, clusterString(info))
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func clusterString(info *jetstream.StreamInfo) string {
	if info == nil || info.Cluster == nil {
		return "unknown"
	}
	s := fmt.Sprintf("leader %q", info.Cluster.Leader)
	for _, p := range info.Cluster.Replicas {
		s += fmt.Sprintf("; %s current=%v offline=%v lag=%d active=%s", p.Name, p.Current, p.Offline, p.Lag, p.Active)
	}
	return s
}

// scenarioFlaky (7): every exec node fails 20 % of its attempts (exit 1), below its last
// attempt; node b retries within the ack wait (NakWithDelay), node c past it (the schedule
// path).
func scenarioFlaky(t *testing.T, sz size) *report {
	r := newRig(t, "flaky", rigOptions{})
	flaky := map[string]string{"FAIL_PCT": "20", "FAIL_BELOW": "10", "SLEEP": "0.1"}
	r.applyWorkflow("flaky",
		node{name: "a", env: flaky, retry: "{max_attempts: 10, initial: 100ms, max: 500ms}"},
		node{name: "b", needs: []string{"a"}, env: flaky, retry: "{max_attempts: 10, initial: 200ms, max: 800ms}"},
		node{name: "c", needs: []string{"b"}, env: flaky, retry: "{max_attempts: 10, initial: 1500ms, max: 3s, jitter: 0}"})
	r.keepWorkers(sz.workers)
	r.startRuns("flaky", sz.runs, sz.gap, "")
	rep := r.check(checkOptions{endWithin: sz.within})
	if rep.Failures == 0 && sz.runs >= 10 {
		t.Errorf("no failure was injected in %d runs", sz.runs)
	}
	return rep
}

// scenarioDuplicates (8): steps published again with Nats-Msg-Ids of their own (what a
// producer retrying with a fresh ID would do), at random delays: some race the original,
// some come after its result. Node b fails its first attempt and then runs for a second, so
// duplicates also meet a step that is retrying or running on a redelivery.
func scenarioDuplicates(t *testing.T, sz size) *report {
	r := newRig(t, "duplicates", rigOptions{})
	r.applyWorkflow("dups",
		node{name: "a", env: map[string]string{"SLEEP": "0.2"}},
		node{name: "b", needs: []string{"a"}, retry: "{max_attempts: 5, initial: 200ms, jitter: 0}",
			env: map[string]string{"FAIL_FIRST": "1", "SLEEP": "1"}},
		node{name: "c", needs: []string{"b"}, env: map[string]string{"SLEEP": "0.2"}})
	r.keepWorkers(sz.workers)
	d := r.duplicateSteps(60, sz.faults, 2*time.Second)
	r.startRuns("dups", sz.runs, sz.gap, "")
	rep := r.check(checkOptions{endWithin: sz.within})
	d.stop()
	if d.errs.Load() > 0 {
		t.Logf("%d duplicate publishes failed", d.errs.Load())
	}
	if rep.Faults[faultDuplicate] == 0 {
		t.Errorf("no duplicate was published (%d steps seen)", d.seen.Load())
	}
	return rep
}

// scenarioLongSteps (9): handlers of 6 s, three times the ack wait, on two workers at
// --concurrency 2, with a backlog of runs queued behind them; one worker SIGKILLed mid-way
// (sz.faults times, each once the other has been running a while). A worker pulls only as
// many steps as it has free slots, so no step waits in a client buffer past its ack wait:
// no step runs twice on the healthy worker or beside itself, and only the killed worker's
// steps run again.
func scenarioLongSteps(t *testing.T, sz size) *report {
	r := newRig(t, "long-steps", rigOptions{concurrency: 2})
	r.applyWorkflow("long",
		node{name: "a", timeout: "30s", env: map[string]string{"SLEEP": "6"}},
		node{name: "b", needs: []string{"a"}, timeout: "30s", env: map[string]string{"SLEEP": "6"}})
	r.keepWorkers(sz.workers)
	r.startRuns("long", sz.runs, 0, "")
	wait := every(9*time.Second, sz.faults, time.Now().Add(sz.within), func(int) {
		if w := r.victim(false); w != nil {
			r.killWorker(w)
		}
	})
	wait()
	return r.check(checkOptions{endWithin: sz.within})
}

// scenarioRunsOutage (10): the runs bucket refuses every write (as a full store would) for
// 30 s — 15 s at the quick size — while runs of three 1 s steps are in flight, sz.faults
// times. Broker errors hand steps back with a growing delay, marked, and results are held
// through the outage: every run completes, nothing goes to the DLQ, nothing runs twice and
// no crash is counted.
func scenarioRunsOutage(t *testing.T, sz size) *report {
	r := newRig(t, "runs-outage", rigOptions{})
	r.applyWorkflow("three",
		node{name: "a", env: map[string]string{"SLEEP": "1"}},
		node{name: "b", needs: []string{"a"}, env: map[string]string{"SLEEP": "1"}},
		node{name: "c", needs: []string{"b"}, env: map[string]string{"SLEEP": "1"}})
	r.keepWorkers(sz.workers)
	// Starting a run writes the runs bucket: every run is started before the outage.
	r.startRuns("three", sz.runs, 50*time.Millisecond, "")
	outage := 30 * time.Second
	if sz.runs < 20 {
		outage = 15 * time.Second
	}
	for range sz.faults {
		time.Sleep(1500 * time.Millisecond)
		r.refuseRunsWrites(outage)
	}
	return r.check(checkOptions{endWithin: sz.within})
}
