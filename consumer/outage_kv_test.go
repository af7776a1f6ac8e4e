package consumer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/internal/natstest"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestRunsBucketOutageBacksOff: the runs bucket refuses every write for 60 s while 20 runs of
// three 1-second steps are in flight, on a consumer with setup's defaults (AckWait 30 s,
// MaxDeliver 20). A KV error in the state machine is the store's, not the step's: the step
// backs off (a delay growing with the delivery count, under AckWait/2), those deliveries are
// not crashes, and nothing reaches MaxDeliver's DLQ verdict. Every run completes once the
// bucket takes writes again; the DLQ stays empty; no node counts more than one crash.
//
// Before the fix, each step came back about once a second (NakWithDelay(1 s)), used up its 20
// deliveries within the outage, and the sweeper dead-lettered every run: "delivered 20 times
// without finishing (worker crash or timeout)".
func TestRunsBucketOutageBacksOff(t *testing.T) {
	if testing.Short() {
		t.Skip("a 60 s outage of the runs bucket")
	}
	t.Parallel()
	const (
		runs    = 20
		outage  = 60 * time.Second
		stepFor = time.Second
	)
	f := setup(t)
	ctx := context.Background()
	// The type's consumer as setup makes it for a user: its defaults, not the fixture's 2 s.
	if err := jsetup.EnsureConsumer(ctx, f.js, f.names, jsetup.ConsumerConfig{Type: "steady"}, true, 1, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := f.js.Consumer(ctx, f.names.StepsStream(), f.names.Consumer("steady"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.AckWait != jsetup.DefaultAckWait || c.MaxDeliver != jsetup.DefaultMaxDeliver {
		t.Fatalf("consumer has AckWait %s, MaxDeliver %d; want setup's defaults %s, %d", c.AckWait, c.MaxDeliver, jsetup.DefaultAckWait, jsetup.DefaultMaxDeliver)
	}
	wf := workflow.New("outage")
	wf.Node("a", "steady")
	wf.Node("b", "steady", "a")
	wf.Node("c", "steady", "b")
	f.apply(wf)

	var started atomic.Int64
	var handled counter
	handler := func(ctx context.Context, s *Step) (any, error) {
		started.Add(1)
		handled.inc(s)
		return sleepStep(ctx, s, stepFor)
	}
	for range 2 {
		f.worker(Config{Concurrency: 4}, func(w *Worker) { w.Handle("steady", handler) })
	}
	kv := f.store.KV()
	if _, err := kv.Put(ctx, "probe.existing", []byte("before")); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range runs {
		ids = append(ids, f.start("outage", fmt.Sprintf(`{"i":%d}`, i)))
	}
	// The outage begins while the first steps run, before any of them can record its result.
	natstest.Eventually(t, 30*time.Second, func() bool { return started.Load() >= 4 }, "no step started")
	// Writes to existing keys are refused through the bucket's per-key history limit.
	if st, err := f.js.Stream(context.Background(), "KV_"+f.names.RunsBucket()); err != nil {
		t.Fatal(err)
	} else if h := st.CachedInfo().Config.MaxMsgsPerSubject; h <= 0 {
		t.Fatalf("stream %s keeps %d messages per subject; want a KV history", "KV_"+f.names.RunsBucket(), h)
	}
	restore := natstest.RefuseWrites(t, f.js, "KV_"+f.names.RunsBucket())
	if _, err := kv.Put(ctx, "probe.new", []byte("during")); err == nil {
		t.Fatal("the runs bucket took a write to a new key during the outage")
	} else {
		t.Logf("write to a new key during the outage: %v", err)
	}
	if _, err := kv.Put(ctx, "probe.existing", []byte("during")); err == nil {
		t.Fatal("the runs bucket took a write to an existing key during the outage")
	} else {
		t.Logf("write to an existing key during the outage: %v", err)
	}
	time.Sleep(outage) // the fault itself, not an assertion
	restore()
	if _, err := kv.Put(ctx, "probe.existing", []byte("after")); err != nil {
		t.Fatalf("the runs bucket still refuses writes after the outage: %v", err)
	}

	const within = 90 * time.Second
	ends := f.waitEnds(ids, within)
	statuses := map[string]int{}
	for _, e := range ends {
		statuses[e.Status]++
	}
	t.Logf("%d runs ended of %d: %v", len(ends), runs, statuses)
	checkEnds(t, ids, ends, within)

	entries, err := listDLQ(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		reasons := map[string]int{}
		for _, e := range entries {
			reasons[e.Reason]++
		}
		var what []string
		for r, n := range reasons {
			what = append(what, fmt.Sprintf("%d× %q", n, r))
		}
		sort.Strings(what)
		t.Errorf("the DLQ holds %d entries, want none: %s", len(entries), strings.Join(what, ", "))
	}

	crashes := map[int]int{} // crashes counted → nodes
	maxRuns := 0
	var crashed []string
	for _, id := range ids {
		for _, n := range wf.Nodes {
			maxRuns = max(maxRuns, handled.get(id, n.Name))
			st := f.node(id, n.Name)
			if st == nil {
				continue
			}
			crashes[st.Crashes]++
			if st.Crashes > 1 {
				crashed = append(crashed, fmt.Sprintf("%s: %d (%s, attempts %d)", workflow.IdempotencyKey(id, n.Name), st.Crashes, st.Status, st.Attempts))
			}
		}
	}
	t.Logf("nodes by crashes counted: %v; most handler runs of one node: %d", crashes, maxRuns)
	if len(crashed) > 0 {
		t.Errorf("%d nodes counted more than one crash with no worker crashed, e.g. %s", len(crashed), strings.Join(crashed[:min(3, len(crashed))], "; "))
	}
}
