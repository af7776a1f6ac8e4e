package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
)

// TestReadBreakersShowsTripsOnly: the breakers bucket also holds closed keys' failure
// streaks (breaker.Count); the breakers view lists the open and half-open keys only.
func TestReadBreakersShowsTripsOnly(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 5*time.Second)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.KeyValue(ctx, names.BreakersBucket())
	if err != nil {
		t.Fatal(err)
	}
	set := breaker.New(kv, "w1", breaker.Options{})
	done := make(chan struct{})
	go func() { defer close(done); _ = set.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-set.Ready()
	fail := errors.New("503")
	streak := breaker.Settings{Key: "flaky-api", ConsecutiveFailures: 5}
	tk, _, _ := set.Allow(ctx, streak)
	tk.Done(ctx, fail) // one failure: a streak, not a trip
	set.CoolDown(ctx, breaker.Settings{Key: "busy-api"}, time.Minute)
	views, err := metrics.ReadBreakers(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 || views[0].Key != "busy-api" || views[0].State != "open" {
		t.Fatalf("breakers view %+v, want busy-api open only", views)
	}
}
