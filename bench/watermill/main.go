// Command jetflow-bench-watermill is the Watermill baseline of `jetflow bench --baseline`:
// the same linear chain of noop hops as the benchmark's workflow, written as a user writes it
// with Watermill and watermill-nats (JetStream, the default NATS marshaler, a router with the
// Retry, PoisonQueue and Recoverer middleware, Nats-Msg-Id set from the message UUID). It
// checkpoints nothing. It lives in a Go module of its own so that jetflow's module does not
// depend on Watermill; `jetflow bench` runs it as a separate process and reads the one JSON
// object it prints.
//
//	go build -o ../../bin/jetflow-bench-watermill .
//	jetflow-bench-watermill --nats nats://127.0.0.1:4222 --runs 2000 --steps 5 --concurrency 64
//
// It connects as jetflow's CLI does: the server from --nats or NATS_URL, and credentials only
// from the environment (NATS_CREDS, NATS_NKEY, NATS_USER and NATS_PASSWORD, NATS_TOKEN,
// NATS_CA, NATS_CERT and NATS_KEY), so that none is on a command line.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	var cfg Config
	flag.StringVar(&cfg.URL, "nats", cmp.Or(os.Getenv("NATS_URL"), nats.DefaultURL), "the NATS server (env NATS_URL)")
	flag.StringVar(&cfg.Prefix, "prefix", "wmbench", "prefix of the chain's topics (streams); they must not exist and are deleted afterwards")
	flag.IntVar(&cfg.Runs, "runs", 2000, "messages that travel the whole chain")
	flag.IntVar(&cfg.Steps, "steps", 5, "hops in the chain")
	flag.IntVar(&cfg.Concurrency, "concurrency", 64, "messages handled at once over all hops")
	flag.IntVar(&cfg.Subscribers, "subscribers", 0, "queue subscriptions per hop (default: concurrency ÷ steps, rounded up)")
	flag.IntVar(&cfg.Payload, "payload", 0, "bytes of input every message carries")
	flag.IntVar(&cfg.Replicas, "replicas", 1, "replicas of the topics' streams")
	flag.DurationVar(&cfg.Stall, "stall", time.Minute, "give up when no run ended for this long")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "jetflow-bench-watermill: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	opts, err := envOptions()
	if err != nil {
		fmt.Fprintf(os.Stderr, "jetflow-bench-watermill: %v\n", err)
		os.Exit(2)
	}
	cfg.Options = opts
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	res, err := Run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "jetflow-bench-watermill: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "jetflow-bench-watermill: %v\n", err)
		os.Exit(1)
	}
}

// envOptions are the connection options the environment names, as jetflow's CLI reads them.
func envOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if f := os.Getenv("NATS_CREDS"); f != "" {
		opts = append(opts, nats.UserCredentials(f))
	}
	if f := os.Getenv("NATS_NKEY"); f != "" {
		o, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY %s: %w", f, err)
		}
		opts = append(opts, o)
	}
	if u := os.Getenv("NATS_USER"); u != "" {
		opts = append(opts, nats.UserInfo(u, os.Getenv("NATS_PASSWORD")))
	}
	if t := os.Getenv("NATS_TOKEN"); t != "" {
		opts = append(opts, nats.Token(t))
	}
	if f := os.Getenv("NATS_CA"); f != "" {
		opts = append(opts, nats.RootCAs(f))
	}
	if c, k := os.Getenv("NATS_CERT"), os.Getenv("NATS_KEY"); c != "" || k != "" {
		opts = append(opts, nats.ClientCert(c, k))
	}
	return opts, nil
}
