// Command hangworker is a jetflow worker for the chaos suite. It runs node type "hang": a Go
// handler that, on the first run of each step, ignores its context and sleeps -hang — the
// library path that DESIGN.md's step 4 is about (the exec node cannot get there: it SIGKILLs
// its process group when the timeout ends). It appends to the suite's ledger like the exec
// nodes do, with a per-run number in place of the handler's PID.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hangworker:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", nats.DefaultURL, "NATS server URLs, comma-separated")
	prefix := flag.String("prefix", workflow.DefaultPrefix, "jetflow prefix")
	ledger := flag.String("ledger", "", "ledger file to append to")
	markers := flag.String("markers", "", "directory of first-run markers, one file a step")
	hang := flag.Duration("hang", 20*time.Second, "how long a first run sleeps, ignoring its context")
	flag.Parse()
	if *ledger == "" || *markers == "" {
		return errors.New("-ledger and -markers are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	names, err := workflow.NewNames(*prefix)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := consumer.New(js, store, consumer.Config{Names: names, Types: []string{"hang"}, Concurrency: 8, DrainTimeout: 2 * time.Second, Logger: log})
	if err != nil {
		return err
	}
	var runs atomic.Int64
	w.Handle("hang", func(_ context.Context, s *consumer.Step) (any, error) {
		id := os.Getpid()*1000 + int(runs.Add(1))
		if err := record(*ledger, s, id, "start"); err != nil {
			return nil, err
		}
		if f, err := os.OpenFile(filepath.Join(*markers, s.IdempotencyKey), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			_ = f.Close()
			time.Sleep(*hang) // ignores the context on purpose
		}
		if err := record(*ledger, s, id, "finish"); err != nil {
			return nil, err
		}
		return map[string]any{"key": s.IdempotencyKey, "attempt": s.Attempt, "pid": id}, nil
	})
	return w.Run(ctx)
}

// record appends one ledger line in one write to a file opened O_APPEND.
func record(path string, s *consumer.Step, id int, event string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = fmt.Fprintf(f, "%s %d %d %d %s %s %d\n", s.IdempotencyKey, s.Attempt, id, os.Getpid(), s.Node, event, time.Now().UnixMilli())
	return err
}
