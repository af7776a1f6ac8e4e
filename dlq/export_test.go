package dlq

// WithHook returns opts with a crash hook: hook is called at each crash point of the replay
// and returning true stops the replay dead there.
func WithHook(opts ReplayOptions, hook func(point string) bool) ReplayOptions {
	opts.hook = hook
	return opts
}

// SetHook gives the sweeper a crash hook, like WithHook.
func SetHook(s *Sweeper, hook func(point string) bool) { s.hook = hook }

// ErrStopped is what an operation stopped by a hook returns.
var ErrStopped = errStopped

// Crash points, for tests.
const (
	PointReplayRetrying  = pointReplayRetrying
	PointReplayReopened  = pointReplayReopened
	PointReplayPublished = pointReplayPublished
	PointSweepPublished  = pointSweepPublished
	PointSweepDead       = pointSweepDead
	PointSweepEnded      = pointSweepEnded
	PointSweepDeleted    = pointSweepDeleted
)
