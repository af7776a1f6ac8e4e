package checkpoint

import (
	"context"

	"github.com/jetflow-dev/jetflow/workflow"
)

// UpdateEnd replaces a run's end at revision rev (ErrConflict when it changed since), as a
// run whose failed end a replayed node outlived ends completed.
func (s *Store) UpdateEnd(ctx context.Context, run string, e *End, rev uint64) error {
	_, err := put(ctx, s.runs, workflow.EndKey(run), e, max(rev, 1))
	return err
}
