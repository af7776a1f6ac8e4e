package kvwatch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// Follow delivers the values present, the end-of-values marker, then new updates; after a
// failed open it tries again; it returns when its context ends.
func TestFollow(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "follow"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		got   []string
		opens int
	)
	open := func(ctx context.Context) (jetstream.KeyWatcher, error) {
		mu.Lock()
		defer mu.Unlock()
		if opens++; opens == 1 {
			return nil, errors.New("first open fails")
		}
		return kv.WatchAll(ctx)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, open, func(e jetstream.KeyValueEntry) {
			mu.Lock()
			defer mu.Unlock()
			if e == nil {
				got = append(got, "end")
				return
			}
			got = append(got, e.Key()+"="+string(e.Value()))
		})
	}()
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, "the present value and the end marker never came")
	if _, err := kv.Put(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3
	}, "the update never came")
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a=1", "end", "b=2"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || opens != 2 {
		t.Fatalf("updates %v after %d opens; want %v after 2", got, opens, want)
	}
}

// Follow returns when its context ends even when the connection under the watch was closed
// first. (A worker's shutdown once hung in Follow after its connection was closed: the watch
// never closed its channel. This order of events does not reproduce that race every time;
// Follow now stops on its context without waiting for the channel.)
func TestFollowReturnsAfterConnectionClosed(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "closed"})
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, func(ctx context.Context) (jetstream.KeyWatcher, error) {
			select {
			case opened <- struct{}{}:
			default:
			}
			return kv.WatchAll(ctx)
		}, func(jetstream.KeyValueEntry) {})
	}()
	<-opened
	nc.Close()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not return after its context ended over a closed connection")
	}
}

// Scan reads the current values once: every key, or the keys its filters match, without
// deleted ones; fn's error stops it.
func TestScan(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "scan"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a.1", "a.2", "b.1", "gone"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	keys := func(filters ...string) []string {
		var got []string
		if err := Scan(ctx, kv, filters, func(e jetstream.KeyValueEntry) error { got = append(got, e.Key()); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := keys(); len(got) != 3 {
		t.Errorf("Scan of every key: %v, want a.1 a.2 b.1", got)
	}
	if got := keys("a.*"); len(got) != 2 {
		t.Errorf("Scan of a.*: %v, want a.1 a.2", got)
	}
	stop := errors.New("stop")
	if err := Scan(ctx, kv, nil, func(jetstream.KeyValueEntry) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn's error: %v", err)
	}
}

// A fetch from an ordered consumer configured by ReadNow returns an error when the server is
// gone, instead of recreating the consumer for ever (it hung a worker's shutdown: the
// reaper's Repair waited in FetchNoWait while TestCrashPoints stopped the server).
func TestReadNowFetchReturnsWhenTheServerIsGone(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "READNOW", Subjects: []string{"readnow.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, "readnow.x", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.OrderedConsumer(ctx, ReadNow(jetstream.OrderedConsumerConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	done := make(chan error, 1)
	go func() {
		_, err := c.FetchNoWait(10)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("FetchNoWait with the server gone returned no error")
		}
		t.Logf("FetchNoWait with the server gone: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("FetchNoWait did not return 2 minutes after the server stopped (it recreates the consumer for ever)")
	}
}
