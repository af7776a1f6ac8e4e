package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// runnerIdle is how long a runner goroutine waits for its next step before it ends.
const runnerIdle = time.Minute

// runners runs steps on goroutines kept between steps. A step's call chain is deep (the
// state machine, KV writes, JSON, the client's request path): a fresh goroutine starts with
// a small stack and grows it by copying, several times per step, which cost a measurable
// share of the step's CPU; a kept goroutine has grown its stack already. There are never
// more runners than steps running at once plus the idle ones, which end after runnerIdle or
// when the worker stops fetching.
type runners struct {
	work chan func(*runner) // unbuffered: a send succeeds only when a runner is idle
	live sync.WaitGroup     // runners not detached
}

// runner is one runner goroutine, handed to the step it runs.
type runner struct {
	rs       *runners
	detached atomic.Bool
}

// detach gives the runner up: its step's handler ignored its timeout and holds the
// goroutine. The runner ends when the handler returns at last, and wait no longer waits
// for it.
func (r *runner) detach() {
	if r != nil && r.detached.CompareAndSwap(false, true) {
		r.rs.live.Done()
	}
}

func newRunners() *runners { return &runners{work: make(chan func(*runner))} }

// run runs f on an idle runner, or on a new one when none is idle. Runners end when stop
// ends and they are idle.
func (rs *runners) run(stop context.Context, f func(*runner)) {
	select {
	case rs.work <- f:
		return
	default:
	}
	r := &runner{rs: rs}
	rs.live.Add(1)
	go func() {
		defer r.detach()
		if f(r); r.detached.Load() {
			return
		}
		idle := time.NewTimer(runnerIdle)
		defer idle.Stop()
		for {
			select {
			case f := <-rs.work:
				if f(r); r.detached.Load() {
					return
				}
				idle.Reset(runnerIdle)
			case <-idle.C:
				return
			case <-stop.Done():
				return
			}
		}
	}()
}

// wait waits until every runner not detached has ended.
func (rs *runners) wait() { rs.live.Wait() }
