package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/producer"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// clusterFixture is a 3-node cluster set up at R3 with three workers, one per node.
type clusterFixture struct {
	t     *testing.T
	c     *natstest.Cluster
	names workflow.Names
	js    jetstream.JetStream
	store *checkpoint.Store
	prod  *producer.Producer
	runs  counter
}

func connectTo(t *testing.T, c *natstest.Cluster, first int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	urls := strings.Split(c.URLs(), ",")
	urls[0], urls[first] = urls[first], urls[0]
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func setupCluster(t *testing.T) *clusterFixture {
	t.Helper()
	c := natstest.StartCluster(t, 3)
	_, js := connectTo(t, c, 0)
	names := workflow.MustNames("jetflow")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := jsetup.Run(ctx, js, jsetup.Config{Names: names, Replicas: 3,
		Types: []jsetup.ConsumerConfig{{Type: "work", AckWait: 3 * time.Second}}}); err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	f := &clusterFixture{t: t, c: c, names: names, js: js, store: store, prod: producer.New(js, store, producer.Config{Names: names})}
	wf := workflow.New("chain")
	wf.Node("a", "work")
	wf.Node("b", "work", "a")
	wf.Node("c", "work", "b")
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, wjs := connectTo(t, c, i)
		wstore, err := checkpoint.Open(ctx, wjs, names)
		if err != nil {
			t.Fatal(err)
		}
		f.startWorker(wjs, wstore, fmt.Sprintf("worker-%d", i))
	}
	return f
}

// startWorker runs a worker of type work (counting its handler runs) until the test ends.
func (f *clusterFixture) startWorker(js jetstream.JetStream, store *checkpoint.Store, id string) {
	f.t.Helper()
	w, err := New(js, store, Config{Names: f.names, ID: id, PollWait: 500 * time.Millisecond})
	if err != nil {
		f.t.Fatal(err)
	}
	w.Handle("work", func(ctx context.Context, s *Step) (any, error) {
		f.runs.inc(s)
		time.Sleep(5 * time.Millisecond)
		return s.Node, nil
	})
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	f.t.Cleanup(func() { stop(); <-done })
}

// start starts n runs, retrying through a leader election.
func (f *clusterFixture) start(n int) []string {
	var ids []string
	for i := range n {
		id := fmt.Sprintf("run-%03d", i)
		natstest.Eventually(f.t, 60*time.Second, func() bool {
			_, err := f.prod.Start(context.Background(), "chain", []byte(`{}`), producer.StartOptions{ID: id})
			return err == nil
		}, "could not start run %s", id)
		ids = append(ids, id)
	}
	return ids
}

// check waits for every run to complete and checks each node was recorded once, by a
// handler that ran again only where a fault explains it. It returns the re-runs.
func (f *clusterFixture) check(ids []string) int {
	f.t.Helper()
	for _, id := range ids {
		var end *checkpoint.End
		natstest.Eventually(f.t, 120*time.Second, func() bool {
			e, _, err := f.store.End(context.Background(), id)
			end = e
			return err == nil && e != nil
		}, "run %s did not end", id)
		if end.Status != checkpoint.EndCompleted {
			f.t.Fatalf("run %s ended %s (%s)", id, end.Status, end.Reason)
		}
	}
	reruns := 0
	for _, id := range ids {
		for _, n := range []string{"a", "b", "c"} {
			st, _, err := f.store.Node(context.Background(), id, n)
			if err != nil || st == nil || st.Status != checkpoint.StatusDone || string(st.Output) != `"`+n+`"` {
				f.t.Fatalf("run %s node %s: %+v (%v)", id, n, st, err)
			}
			if k := f.runs.get(id, n); k > 1 {
				reruns += k - 1
			} else if k == 0 {
				f.t.Fatalf("run %s node %s is done but its handler never ran", id, n)
			}
		}
	}
	f.t.Logf("%d runs completed; %d handler re-runs (a step whose ack was lost in the fault)", len(ids), reruns)
	return reruns
}

// TestClusterStepsLeaderKilled: 150 runs on an R3 cluster with three workers on three nodes;
// the steps stream's leader is killed mid-way and restarted. Every run completes and every
// node result is recorded once.
func TestClusterStepsLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	f := setupCluster(t)
	ids := f.start(50) // a third of the runs start before the fault, the rest through it
	s, err := f.js.Stream(context.Background(), f.names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	leader := f.c.Index(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("no leader for %s", f.names.StepsStream())
	}
	f.c.Stop(leader)
	ids = append(ids, f.start(150)[50:]...)
	f.c.Restart(leader)
	_ = f.check(ids)
}

// TestClusterRollingRestart restarts the three nodes one by one under load: no run is lost.
func TestClusterRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	f := setupCluster(t)
	ids := f.start(30)
	for i := range 3 {
		f.c.Stop(i)
		more := f.start(30 * (i + 2))
		ids = append(ids, more[30*(i+1):]...)
		f.c.Restart(i)
		f.c.WaitReady()
	}
	_ = f.check(ids)
}

// TestClusterLaggingFollower: the runs bucket is R3 and read from its leader (direct gets off),
// so a follower that fell behind never answers a read that decides idempotency or whether a
// run exists. One node, leading none of the runs bucket, the steps stream and the consumer,
// is stopped while 60 runs start (its replicas miss those writes) and restarted; a fourth
// worker connected to it alone starts as soon as its routes are back (it may still be catching
// up), and 60 more runs start.
// With no fault on any leader, every run completes, every handler ran exactly once, and the
// DLQ is empty (no step was taken for one of an unknown run).
func TestClusterLaggingFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	f := setupCluster(t)
	nc, _ := connectTo(t, f.c, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const lag = 2
	lagName := f.c.Servers[lag].Name()
	// Move every leadership that matters off the node that will lag.
	assets := map[string]string{
		"$JS.API.STREAM.INFO." + "KV_" + f.names.RunsBucket():                             "$JS.API.STREAM.LEADER.STEPDOWN." + "KV_" + f.names.RunsBucket(),
		"$JS.API.STREAM.INFO." + f.names.StepsStream():                                    "$JS.API.STREAM.LEADER.STEPDOWN." + f.names.StepsStream(),
		"$JS.API.CONSUMER.INFO." + f.names.StepsStream() + "." + f.names.Consumer("work"): "$JS.API.CONSUMER.LEADER.STEPDOWN." + f.names.StepsStream() + "." + f.names.Consumer("work"),
	}
	// A step-down names the new leader (nats-server 2.11's placement), so it cannot come back.
	preferred := []byte(`{"placement":{"preferred":"` + f.c.Servers[0].Name() + `"}}`)
	for info, stepdown := range assets {
		deadline := time.Now().Add(30 * time.Second)
		for {
			m, err := nc.RequestWithContext(ctx, info, nil)
			var resp struct {
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			}
			if err == nil && json.Unmarshal(m.Data, &resp) == nil && resp.Cluster.Leader != "" && resp.Cluster.Leader != lagName {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still led by %s (or by nobody)", info, lagName)
			}
			if err == nil && resp.Cluster.Leader == lagName {
				_, _ = nc.RequestWithContext(ctx, stepdown, preferred)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("leaders moved off %s", lagName)
	f.c.Stop(lag)
	ids := f.start(60)
	t.Logf("60 runs started with %s down", lagName)
	f.c.Restart(lag)
	f.c.WaitReady() // its routes are back: it is a follower again, still catching up

	// A worker that talks to the lagging node only.
	lnc, err := nats.Connect(strings.Split(f.c.URLs(), ",")[lag], nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lnc.Close)
	ljs, err := jetstream.New(lnc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var lstore *checkpoint.Store
	natstest.Eventually(t, 30*time.Second, func() bool {
		lstore, err = checkpoint.Open(ctx, ljs, f.names)
		if err != nil {
			t.Logf("bind through %s: %v", lagName, err)
		}
		return err == nil
	}, "could not bind the buckets through the lagging node")
	f.startWorker(ljs, lstore, "worker-lagging")

	more := make([]string, 0, 60)
	for i := 60; i < 120; i++ {
		id := fmt.Sprintf("run-%03d", i)
		if _, err := f.prod.Start(ctx, "chain", []byte(`{}`), producer.StartOptions{ID: id}); err != nil {
			t.Fatal(err)
		}
		more = append(more, id)
	}
	if reruns := f.check(append(ids, more...)); reruns != 0 {
		t.Errorf("%d handler re-runs with no fault on any leader: a read answered from the lagging follower?", reruns)
	}
	dlq, err := f.js.Stream(ctx, f.names.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d DLQ entries; want none", info.State.Msgs)
	}
}
