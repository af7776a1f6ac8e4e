package jetflowtest_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/jetflowtest"
)

func TestCheckFindsMissingAndRepeatedEffects(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]int{}
	// Records an effect only for odd steps, and on every call: repeated for odd steps,
	// missing for even ones.
	h := func(ctx context.Context, s *consumer.Step) (any, error) {
		var in struct{ Input struct{ I int } }
		if err := s.Bind(&in); err != nil {
			return nil, err
		}
		if in.Input.I%2 == 1 {
			mu.Lock()
			seen[s.IdempotencyKey]++
			mu.Unlock()
		}
		return nil, nil
	}
	effects := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
	rep, err := jetflowtest.Check(context.Background(), h, effects, jetflowtest.Options{Steps: 6})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Duplicated) != 3 || len(rep.Missing) != 3 || rep.Executions != 18 {
		t.Fatalf("report %+v", rep)
	}
	if s := rep.String(); !strings.HasPrefix(s, "NOT idempotent: 6 steps, 18 handler calls; 3 keys with repeated side effects") || !strings.Contains(s, "3 keys with no side effect") {
		t.Fatalf("summary %q", s)
	}
}
