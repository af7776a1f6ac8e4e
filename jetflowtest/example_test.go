package jetflowtest_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/jetflowtest"
)

// payments is the handler's world: charges made, by idempotency key.
type payments struct {
	mu      sync.Mutex
	charges map[string][]int
}

func (p *payments) effects() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, c := range p.charges {
		out[k] = len(c)
	}
	return out
}

// A handler that charges once per idempotency key passes; one that charges on every call
// does not.
func Example() {
	ctx := context.Background()

	good := &payments{charges: map[string][]int{}}
	idempotent := func(ctx context.Context, s *consumer.Step) (any, error) {
		good.mu.Lock()
		defer good.mu.Unlock()
		if _, done := good.charges[s.IdempotencyKey]; !done { // the API dedups by key
			good.charges[s.IdempotencyKey] = []int{100}
		}
		return "charged", nil
	}
	rep, err := jetflowtest.Check(ctx, idempotent, good.effects, jetflowtest.Options{Steps: 5})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.OK())

	bad := &payments{charges: map[string][]int{}}
	naive := func(ctx context.Context, s *consumer.Step) (any, error) {
		bad.mu.Lock()
		defer bad.mu.Unlock()
		bad.charges[s.IdempotencyKey] = append(bad.charges[s.IdempotencyKey], 100) // charges again
		return "charged", nil
	}
	rep, err = jetflowtest.Check(ctx, naive, bad.effects, jetflowtest.Options{Steps: 5})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.OK(), len(rep.Duplicated), rep.Effects["step-0000.step"])
	// Output:
	// true
	// false 5 3
}
