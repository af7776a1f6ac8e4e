package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Slots and prefetch. A worker runs at most Concurrency steps of a type at once. How many it
// asks the server for depends on how long its steps take:
//
//   - Steps that take long (a model call, anything near the ack wait): only as many as it
//     has free slots. Every step delivered starts at once, so none waits in a buffer while
//     its ack wait runs out and the server hands it to another worker, which would run it
//     beside the stale copy (issue #11, finding 3).
//   - Short steps (a mean below fastStep and a tenth of the ack wait): up to Concurrency
//     more, queued here until a slot frees. A queued step waits about one step's time, and
//     one that waits a quarter of its ack wait is kept alive (InProgress); without such a
//     queue each freed slot waits a round trip to the server for its next step, which cost
//     about 10 % of the throughput of short steps at the same concurrency.
//
// Under the health monitor's cap, or with no steps measured yet, nothing is prefetched.

// fastStep is the mean time a step may hold its slot for its type to prefetch.
const fastStep = 20 * time.Millisecond

// meanWeight is the weight of each new step in the type's mean step time (an exponentially
// weighted moving average over about the last 16 steps).
const meanWeight = 16

// slots is a type's accounting of the steps asked for, queued and running.
type slots struct {
	size int // Concurrency: steps running at most

	mu     sync.Mutex
	asked  int       // asked for in open pull requests, not delivered yet
	active int       // running (or being admitted)
	queue  []waiting // delivered, waiting for a slot
	mean   time.Duration
	freed  chan struct{} // a signal that asked, queue or active fell (capacity 1)
}

// waiting is a delivered step waiting for a slot.
type waiting struct {
	msg  jetstream.Msg
	kept time.Time // when it arrived or was last kept alive
}

func newSlots(size int) *slots {
	return &slots{size: size, freed: make(chan struct{}, 1)}
}

// signal wakes a take waiting for room.
func (s *slots) signal() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// prefetch is how many steps beyond the free slots may be asked for; s.mu held.
func (s *slots) prefetch(ackWait time.Duration) int {
	if s.mean == 0 || s.mean > fastStep || s.mean > ackWait/10 {
		return 0
	}
	return s.size
}

// take waits until there is room to ask for at least one step and marks all the room it
// found as asked for; it returns 0 when ctx ended first. limit > 0 is the health monitor's
// cap on the steps asked for or running (a cap that rises signals).
func (s *slots) take(ctx context.Context, ackWait time.Duration, limit func() int) int {
	for {
		s.mu.Lock()
		most := s.size + s.prefetch(ackWait)
		if l := limit(); l > 0 {
			most = min(l, s.size)
		}
		// While a queue's worth is asked for or queued, wait for room for a quarter of the
		// slots: one request per batch rather than per step.
		n := most - s.asked - len(s.queue) - s.active
		if n > 0 && (most <= s.size || n >= max(s.size/4, 1) || s.asked+len(s.queue) == 0) {
			s.asked += n
			s.mu.Unlock()
			return n
		}
		s.mu.Unlock()
		select {
		case <-s.freed:
		case <-ctx.Done():
			return 0
		}
	}
}

// unasked gives back n steps asked for that were not delivered (the request ended).
func (s *slots) unasked(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.asked -= n
	s.mu.Unlock()
	s.signal()
}

// delivered accounts for a step that arrived: it reports whether the step may start now
// (a slot is taken for it); otherwise it is queued.
func (s *slots) delivered(msg jetstream.Msg) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked--
	if s.active < s.size && len(s.queue) == 0 {
		s.active++
		return true
	}
	s.queue = append(s.queue, waiting{msg: msg, kept: time.Now()})
	return false
}

// finished frees the slot of a step that held it for took, and returns the queued step
// that takes the slot over, if any (and if next allows it: false hands the queue back).
func (s *slots) finished(took time.Duration, next bool) jetstream.Msg {
	s.mu.Lock()
	if s.mean == 0 {
		s.mean = took
	} else {
		s.mean += (took - s.mean) / meanWeight
	}
	if next && len(s.queue) > 0 {
		msg := s.queue[0].msg
		s.queue[0] = waiting{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		s.signal()
		return msg
	}
	s.active--
	s.mu.Unlock()
	s.signal()
	return nil
}

// unqueue removes every queued step and returns them, to be handed back.
func (s *slots) unqueue() []jetstream.Msg {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(q) == 0 {
		return nil
	}
	out := make([]jetstream.Msg, len(q))
	for i, w := range q {
		out[i] = w.msg
	}
	s.signal()
	return out
}

// stale returns the queued steps that have waited longer than d since they arrived or were
// last kept alive, marking them kept now.
func (s *slots) stale(d time.Duration) []jetstream.Msg {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []jetstream.Msg
	for i := range s.queue {
		if now.Sub(s.queue[i].kept) >= d {
			s.queue[i].kept = now
			out = append(out, s.queue[i].msg)
		}
	}
	return out
}
