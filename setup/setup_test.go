package setup_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSetupIsIdempotentAndKeepsPauses(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	names := workflow.MustNames("acme")
	cfg := setup.Config{Names: names, Types: []setup.ConsumerConfig{{Type: "summarize", MaxAckPending: 20, AckWait: time.Minute}}}
	first, err := setup.Run(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(first.Lines, "\n"), "stream ACME_STEPS: created") {
		t.Fatalf("first setup: %v", first.Lines)
	}
	// One replica: the runs bucket answers direct gets (from the one server storing it).
	s, err := js.Stream(ctx, "KV_"+names.RunsBucket())
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowDirect {
		t.Fatal("the one-replica runs bucket does not allow direct gets")
	}
	steps, _ := js.Stream(ctx, names.StepsStream())
	sc := steps.CachedInfo().Config
	if sc.Retention != jetstream.WorkQueuePolicy || !sc.AllowMsgSchedules || sc.MaxMsgs > 0 || sc.MaxBytes > 0 || sc.MaxAge != 0 || sc.Duplicates != 10*time.Minute {
		t.Fatalf("steps stream config %+v", sc)
	}
	// DLQ entries are kept 30 days.
	dlqStream, err := js.Stream(ctx, names.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := dlqStream.CachedInfo().Config.MaxAge; got != 30*24*time.Hour {
		t.Fatalf("DLQ stream MaxAge %s, want 30 days", got)
	}
	// A paused consumer stays paused through a second setup.
	until := time.Now().Add(time.Hour)
	if _, err := js.PauseConsumer(ctx, names.StepsStream(), names.Consumer("summarize"), until); err != nil {
		t.Fatal(err)
	}
	second, err := setup.Run(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(second.Lines, "\n"), "created") {
		t.Fatalf("second setup created something: %v", second.Lines)
	}
	c, err := js.Consumer(ctx, names.StepsStream(), names.Consumer("summarize"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Paused || info.Config.MaxAckPending != 20 || info.Config.AckWait != time.Minute {
		t.Fatalf("consumer after a second setup: paused %v, config %+v", info.Paused, info.Config)
	}
}

func TestSetupRefusesWhatCannotChangeInPlace(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	names := workflow.MustNames("jetflow")
	// A steps stream someone made with limits retention.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: names.StepsStream(), Subjects: names.StepSubjects()}); err != nil {
		t.Fatal(err)
	}
	_, err := setup.Run(ctx, js, setup.Config{Names: names})
	if err == nil || !strings.Contains(err.Error(), "cannot be changed in place") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want a one-line error saying what cannot change", err)
	}
}

// TestPurgeMarkersExpire: the runs and breakers buckets, whose keys are purged or deleted
// one by one (the reaper, closed breakers), keep those markers for a while, not for ever:
// a fresh setup creates them with a marker TTL, and setup gives one in place to buckets an
// older setup made, keeping their keys.
func TestPurgeMarkersExpire(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	check := func(names workflow.Names, when string) {
		t.Helper()
		for _, bucket := range []string{names.RunsBucket(), names.BreakersBucket()} {
			s, err := js.Stream(ctx, "KV_"+bucket)
			if err != nil {
				t.Fatal(err)
			}
			sc := s.CachedInfo().Config
			if !sc.AllowMsgTTL || sc.SubjectDeleteMarkerTTL <= 0 {
				t.Errorf("%s: bucket %s keeps purge markers for ever (AllowMsgTTL %v, SubjectDeleteMarkerTTL %s)", when, bucket, sc.AllowMsgTTL, sc.SubjectDeleteMarkerTTL)
			}
		}
	}
	fresh := workflow.MustNames("fresh")
	if _, err := setup.Run(ctx, js, setup.Config{Names: fresh}); err != nil {
		t.Fatal(err)
	}
	check(fresh, "a fresh setup")

	// Buckets an older setup made through the KV API, with no marker TTL and a key each.
	old := workflow.MustNames("old")
	for _, bucket := range []string{old.RunsBucket(), old.BreakersBucket()} {
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "kept", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := setup.Run(ctx, js, setup.Config{Names: old}); err != nil {
		t.Fatal(err)
	}
	check(old, "setup over an older install")
	for _, bucket := range []string{old.RunsBucket(), old.BreakersBucket()} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, "kept"); err != nil {
			t.Errorf("bucket %s lost its key in the update: %v", bucket, err)
		}
	}
	// An operator's own marker TTL is kept.
	s, _ := js.Stream(ctx, "KV_"+old.RunsBucket())
	sc := s.CachedInfo().Config
	sc.SubjectDeleteMarkerTTL = 5 * time.Second
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Run(ctx, js, setup.Config{Names: old}); err != nil {
		t.Fatal(err)
	}
	s, _ = js.Stream(ctx, "KV_"+old.RunsBucket())
	if got := s.CachedInfo().Config.SubjectDeleteMarkerTTL; got != 5*time.Second {
		t.Errorf("setup changed a marker TTL an operator set: %s", got)
	}
}

// TestRunsReadModeFollowsReplicas moves a runs bucket from one replica to three and back on a
// 3-node cluster, with a store bound all along: direct gets are on only at one replica (where
// the one server storing the bucket answers them), and the bound handle keeps reading, and
// reads the latest write, through both changes (checkpoint.Read switches it to leader reads
// when direct gets are turned off under it).
func TestRunsReadModeFollowsReplicas(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := workflow.MustNames("modes")
	direct := func(replicas int) bool {
		t.Helper()
		if _, err := setup.Run(ctx, js, setup.Config{Names: names, Replicas: replicas}); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, "KV_"+names.RunsBucket())
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Replicas; got != replicas {
			t.Fatalf("runs bucket at %d replicas, want %d", got, replicas)
		}
		return s.CachedInfo().Config.AllowDirect
	}
	if !direct(1) {
		t.Fatal("R1: the runs bucket does not allow direct gets")
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	write := func(v string) {
		t.Helper()
		if _, err := store.KV().Put(ctx, "probe", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(want string) {
		t.Helper()
		e, err := checkpoint.Read(ctx, store.KV(), "probe")
		if err != nil {
			t.Fatalf("read after the change: %v", err)
		}
		if string(e.Value()) != want {
			t.Fatalf("read %q, want the latest write %q", e.Value(), want)
		}
	}
	write("1")
	read("1")
	if direct(3) {
		t.Fatal("R3: the runs bucket allows direct gets: a lagging follower could answer")
	}
	read("1")
	for i := range 20 {
		v := fmt.Sprint("r3-", i)
		write(v)
		read(v)
	}
	if !direct(1) {
		t.Fatal("back at R1: the runs bucket does not allow direct gets")
	}
	write("back")
	read("back")
}
