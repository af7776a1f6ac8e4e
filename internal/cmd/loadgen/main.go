// Command loadgen starts many runs of a registered workflow as fast as it can, for load and
// memory measurements (BENCHMARKS.md). It is not part of the jetflow CLI.
//
//	go run ./internal/cmd/loadgen --nats nats://127.0.0.1:4222 --workflow park --runs 100000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS URL")
	prefix := flag.String("prefix", "jetflow", "jetflow prefix")
	wf := flag.String("workflow", "", "workflow to start (registered)")
	runs := flag.Int("runs", 1000, "runs to start")
	par := flag.Int("parallel", 32, "concurrent starts")
	flag.Parse()
	if err := run(*url, *prefix, *wf, *runs, *par); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(url, prefix, wf string, runs, par int) error {
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	names, err := workflow.NewNames(prefix)
	if err != nil {
		return err
	}
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		return err
	}
	p := producer.New(js, store, producer.Config{Names: names})
	var next, failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(runs) {
					return
				}
				if _, err := p.Start(ctx, wf, []byte(fmt.Sprintf(`{"i":%d}`, i)), producer.StartOptions{}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	fmt.Printf("started %d runs in %s (%.0f runs/s), %d failed\n", runs-int(failed.Load()), d.Round(time.Millisecond), float64(runs)/d.Seconds(), failed.Load())
	return nil
}
