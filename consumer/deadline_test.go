package consumer

import (
	"context"
	"testing"
	"time"
)

func TestOpsDeadline(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	d := newOpsDeadline(parent)
	ctx := d.get()
	dl, ok := ctx.Deadline()
	if left := time.Until(dl); !ok || left < opsTimeout-time.Second || left > opsTimeout+opsRenew {
		t.Fatalf("deadline %v away (set %v); want %v to %v", left, ok, opsTimeout, opsTimeout+opsRenew)
	}
	if d.get() != ctx {
		t.Fatal("a second call within the renewal period made a new context")
	}
	// Past its renewal time, calls get a new context; the old one stays live for the calls
	// that hold it.
	d.cur.Store(&opsContext{ctx: ctx, renewAt: time.Now().Add(-time.Millisecond)})
	renewed := d.get()
	if renewed == ctx || ctx.Err() != nil {
		t.Fatalf("renewal: new context %v, old one's error %v", renewed != ctx, ctx.Err())
	}
	// Stopping the work ends every call in flight.
	stop()
	for _, c := range []context.Context{ctx, renewed} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a broker call's context outlived the work context")
		}
	}
}
