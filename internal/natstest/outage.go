package natstest

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// RefuseWrites makes a stream (a KV bucket's: KV_<bucket>) refuse every new message, as a
// full store would: a write to a new key (MaxMsgs reached under DiscardNew) and to an
// existing one (DiscardNewPerSubject, when the stream keeps a history per subject). Reads
// keep working, and under DiscardNew the server drops no stored message to meet the lowered
// MaxMsgs. The returned func puts the original config back (once; also when the test ends).
func RefuseWrites(t testing.TB, js jetstream.JetStream, stream string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orig := before.Config
	full := orig
	full.Discard = jetstream.DiscardNew
	full.DiscardNewPerSubject = orig.MaxMsgsPerSubject > 0
	full.MaxMsgs = 1
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatalf("make %s refuse writes: %v", stream, err)
	}
	after, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.Msgs < before.State.Msgs {
		t.Fatalf("making %s refuse writes dropped messages: %d → %d", stream, before.State.Msgs, after.State.Msgs)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if _, err := js.UpdateStream(context.Background(), orig); err != nil {
				t.Errorf("restore %s: %v", stream, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}
