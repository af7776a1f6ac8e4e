package checkpoint

import "context"

// CancelWithHook is Cancel with a crash hook: returning true at a point stops it dead there.
func (s *Store) CancelWithHook(ctx context.Context, run, reason string, hook func(point string) bool) (bool, error) {
	return s.cancel(ctx, run, reason, hook)
}

// ErrStopped is what an operation stopped by a hook returns.
var ErrStopped = errStopped

// PointCancelKeyed is the crash point between cancel.<run> and the cancelled end.
const PointCancelKeyed = pointCancelKeyed
