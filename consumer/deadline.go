package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Broker calls on the step's hot path share a context whose deadline is opsTimeout to
// opsTimeout+opsRenew away, renewed every opsRenew. Without a deadline, the client wraps
// every request in a context and a timer of its own (three or four per step, the largest
// share of a step's allocations); sharing one gives each request the same bound for one
// context and timer a second.
const (
	opsTimeout = 5 * time.Second // the client's default request timeout
	opsRenew   = time.Second
)

// opsDeadline hands out the shared context of broker calls. It is derived from the
// worker's work context, so stopping the work cancels the calls in flight as before.
type opsDeadline struct {
	parent context.Context
	cur    atomic.Pointer[opsContext]
	mu     sync.Mutex // one renewal at a time
}

type opsContext struct {
	ctx     context.Context
	renewAt time.Time
}

func newOpsDeadline(parent context.Context) *opsDeadline {
	d := &opsDeadline{parent: parent}
	d.renew(time.Now())
	return d
}

// get returns a context with at least opsTimeout left (or the work context's end).
func (d *opsDeadline) get() context.Context {
	now := time.Now()
	if cur := d.cur.Load(); now.Before(cur.renewAt) {
		return cur.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.cur.Load(); now.Before(cur.renewAt) {
		return cur.ctx // renewed meanwhile
	}
	return d.renew(now)
}

func (d *opsDeadline) renew(now time.Time) context.Context {
	ctx, cancel := context.WithDeadline(d.parent, now.Add(opsTimeout+opsRenew))
	// Calls that took it may still run: it ends at its deadline, when cancel only releases
	// what the deadline released already.
	time.AfterFunc(opsTimeout+opsRenew, cancel)
	d.cur.Store(&opsContext{ctx: ctx, renewAt: now.Add(opsRenew)})
	return ctx
}
