package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
)

// Config sizes one chain run, as `jetflow bench` sizes its own.
type Config struct {
	// URL of the NATS server.
	URL string
	// Options are the connection's options (credentials, TLS).
	Options []nats.Option
	// Prefix names the chain's topics (streams), which must not exist; they are deleted
	// when Run returns.
	Prefix string
	// Runs is how many messages travel the whole chain.
	Runs int
	// Steps is the chain's length: handler i consumes topic i and publishes to topic i+1;
	// the last one only counts.
	Steps int
	// Concurrency is how many messages are handled at once, over all handlers: each
	// handler's subscriber gets ceil(Concurrency/Steps) queue subscriptions (watermill-nats
	// handles one message at a time per subscription), unless Subscribers is set.
	Concurrency int
	// Subscribers, when positive, is the queue subscriptions per handler.
	Subscribers int
	// Payload is how many bytes of input every message carries.
	Payload int
	// Replicas of the topics' streams.
	Replicas int
	// Stall is how long to wait without a run ending before giving up.
	Stall time.Duration
}

// Result is what one chain run measured.
type Result struct {
	Runs        int     `json:"runs"`
	Steps       int     `json:"steps"`
	Subscribers int     `json:"subscribers"`
	Seconds     float64 `json:"seconds"`
	StepsPerSec float64 `json:"steps_per_sec"`
	// CPUMicros is this process's CPU time over the timed part, in µs.
	CPUMicros int64 `json:"cpu_us"`
}

// Run publishes the first message of every run, then starts a Watermill router whose
// handlers pass each message down the chain, and times it until every run reached the
// end. Setup and the first publishes are not timed, as in `jetflow bench`.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Runs < 1 || cfg.Steps < 1 || cfg.Concurrency < 1 {
		return Result{}, errors.New("runs, steps and concurrency must be at least 1")
	}
	subs := cfg.Subscribers
	if subs < 1 {
		subs = (cfg.Concurrency + cfg.Steps - 1) / cfg.Steps
	}
	topics := make([]string, cfg.Steps)
	for i := range topics {
		topics[i] = cfg.Prefix + "_s" + strconv.Itoa(i)
	}
	poison := cfg.Prefix + "_poison"

	// Watermill's publisher and subscriber close the connection they are given; streams are
	// created and deleted on one of their own.
	admin, err := nats.Connect(cfg.URL, append([]nats.Option{nats.Name("jetflow bench watermill setup")}, cfg.Options...)...)
	if err != nil {
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	defer admin.Close()
	nc, err := nats.Connect(cfg.URL, append([]nats.Option{nats.Name("jetflow bench watermill")}, cfg.Options...)...)
	if err != nil {
		return Result{}, fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := admin.JetStream()
	if err != nil {
		return Result{}, err
	}
	// The streams watermill-nats would auto-provision (name and subject = topic, every
	// other setting nats.go's default), created here so that they get the replicas asked,
	// and so that AutoProvision can stay off: with it on, watermill-nats asks for the
	// stream's info before every publish, a round trip a user who creates the streams avoids.
	all := append(append([]string(nil), topics...), poison)
	defer func() {
		for _, t := range all {
			_ = js.DeleteStream(t)
		}
	}()
	for _, t := range all {
		if _, err := js.AddStream(&nats.StreamConfig{Name: t, Subjects: []string{t}, Replicas: max(cfg.Replicas, 1)}); err != nil {
			return Result{}, fmt.Errorf("create stream %s: %w", t, err)
		}
	}

	logger := watermill.NopLogger{}
	jsCfg := wmnats.JetStreamConfig{TrackMsgId: true}
	pub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{}, SubjectCalculator: wmnats.DefaultSubjectCalculator, JetStream: jsCfg,
	}, logger)
	if err != nil {
		return Result{}, fmt.Errorf("publisher: %w", err)
	}
	defer func() { _ = pub.Close() }()
	sub, err := wmnats.NewSubscriberWithNatsConn(nc, wmnats.SubscriberSubscriptionConfig{
		QueueGroupPrefix: cfg.Prefix, SubscribersCount: subs, JetStream: jsCfg,
	}, logger)
	if err != nil {
		return Result{}, fmt.Errorf("subscriber: %w", err)
	}
	defer func() { _ = sub.Close() }()

	body := []byte(`{"v":1,"input":` + input(cfg.Payload) + `}`)
	for i := range cfg.Runs {
		run := "r" + strconv.Itoa(i)
		m := message.NewMessage(run+".0", body)
		m.Metadata.Set("run", run)
		if err := pub.Publish(topics[0], m); err != nil {
			return Result{}, fmt.Errorf("publish first messages: %w", err)
		}
	}

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return Result{}, err
	}
	pq, err := middleware.PoisonQueue(pub, poison)
	if err != nil {
		return Result{}, err
	}
	router.AddMiddleware(
		pq,
		middleware.Retry{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, Logger: logger}.Middleware,
		middleware.Recoverer,
	)
	for i := range cfg.Steps - 1 {
		next := strconv.Itoa(i + 1)
		router.AddHandler("step"+strconv.Itoa(i), topics[i], sub, topics[i+1], pub,
			func(msg *message.Message) ([]*message.Message, error) {
				run := msg.Metadata.Get("run")
				out := message.NewMessage(run+"."+next, msg.Payload)
				out.Metadata.Set("run", run)
				return []*message.Message{out}, nil
			})
	}
	var (
		mu    sync.Mutex
		seen  = make(map[string]bool, cfg.Runs)
		ended atomic.Int64
		done  = make(chan struct{})
	)
	router.AddNoPublisherHandler("end", topics[cfg.Steps-1], sub, func(msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if run := msg.Metadata.Get("run"); !seen[run] {
			seen[run] = true
			if ended.Add(1) == int64(cfg.Runs) {
				close(done)
			}
		}
		return nil
	})

	rctx, stop := context.WithCancel(ctx)
	defer stop()
	start, cpu := time.Now(), cpuTime()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(rctx) }()
	err = wait(ctx, &ended, done, runErr, cfg.Stall)
	elapsed, cpu := time.Since(start), cpuTime()-cpu
	stop()
	_ = router.Close()
	res := Result{Runs: int(ended.Load()), Subscribers: subs, Seconds: elapsed.Seconds(), CPUMicros: cpu.Microseconds()}
	res.Steps = res.Runs * cfg.Steps
	if elapsed > 0 {
		res.StepsPerSec = float64(res.Steps) / elapsed.Seconds()
	}
	return res, err
}

// wait returns when done closes, the router stops, ctx ends or no run ends for stall.
func wait(ctx context.Context, ended *atomic.Int64, done <-chan struct{}, runErr <-chan error, stall time.Duration) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last, lastAt := ended.Load(), time.Now()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case err := <-runErr:
			return fmt.Errorf("router stopped: %w", err)
		case <-t.C:
		}
		if n := ended.Load(); n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return fmt.Errorf("only %d runs ended, and none in the last %s", n, stall)
		}
	}
}

// input is a JSON object of about n bytes, as `jetflow bench --payload n` makes.
func input(n int) string {
	const frame = len(`{"payload":""}`)
	if n <= frame {
		return "{}"
	}
	return `{"payload":"` + strings.Repeat("x", n-frame) + `"}`
}
