package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes/llm"
)

// llmFlags are the flags of the workers that run llm nodes.
type llmFlags struct {
	providers string
	cacheTTL  time.Duration
	file      *llm.File // loaded by load
}

func (l *llmFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&l.providers, "providers", "", "model providers file (YAML) for llm nodes; without it this worker runs no llm node")
	f.DurationVar(&l.cacheTTL, "cache-ttl", llm.DefaultCacheTTL, "how long the answers of llm nodes with cache: true are kept")
}

// load reads and checks the providers file, before anything connects.
func (l *llmFlags) load() error {
	if l.cacheTTL <= 0 {
		return usageErr(errors.New("--cache-ttl must be positive"))
	}
	if l.providers == "" {
		return nil
	}
	f, err := llm.LoadFile(l.providers, nil)
	if err != nil {
		return usageErr(fmt.Errorf("--providers: %w", err))
	}
	l.file = f
	return nil
}

// registerLLM adds the llm node type to w when a providers file was given.
func (a *app) registerLLM(ctx context.Context, c *conn, w *consumer.Worker, l *llmFlags, o *obs) error {
	if l == nil || l.file == nil {
		return nil
	}
	cache, err := c.js.KeyValue(ctx, c.names.CacheBucket())
	if err != nil {
		return failedErr(fmt.Errorf("bucket %s: %w (run `jetflow setup`)", c.names.CacheBucket(), err))
	}
	cfg := llm.Config{Providers: l.file, Cache: cache, CacheTTL: l.cacheTTL, Logger: a.logger()}
	if o != nil && o.metrics != nil {
		cfg.Observer = o.metrics
	}
	if err := llm.Register(w, cfg); err != nil {
		return usageErr(err)
	}
	return nil
}
