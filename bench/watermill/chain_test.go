package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestChainRunsEveryRunToTheEnd runs the chain on an in-process server and checks that every
// run reached the last hop and that the chain's streams are gone afterwards.
func TestChainRunsEveryRunToTheEnd(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{URL: srv.ClientURL(), Prefix: "wmtest", Runs: 50, Steps: 3, Concurrency: 6, Payload: 300, Stall: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs != 50 || res.Steps != 150 || res.Subscribers != 2 {
		t.Errorf("result %+v: want 50 runs, 150 steps, 2 subscribers a hop", res)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	for name := range js.StreamNames() {
		t.Errorf("stream %s left behind", name)
	}
}
