package dlq

import "errors"

// errStopped means a test hook stopped a replay or a sweep dead at a crash point.
var errStopped = errors.New("stopped dead by a test hook")

// Crash points, named for tests: each is a gap between two writes that a crash can leave,
// and that running the operation again (a replay) or the advisory's redelivery (a sweep)
// must finish.
const (
	pointReplayRetrying  = "replay-retrying"  // after CAS node retrying r<id>, before reopening the run
	pointReplayReopened  = "replay-reopened"  // after the failed end is deleted, before the publish
	pointReplayPublished = "replay-published" // after the step publish, before the entry delete
	pointSweepPublished  = "sweep-published"  // after the DLQ publish, before CAS dead (every try)
	pointSweepDead       = "sweep-dead"       // after CAS dead, before the run's end
	pointSweepEnded      = "sweep-ended"      // after the run's end, before the step delete
	pointSweepDeleted    = "sweep-deleted"    // after the step delete, before the advisory ack
)

// at reports whether hook (nil outside tests) stops the operation dead at point.
func at(hook func(point string) bool, point string) bool {
	return hook != nil && hook(point)
}
