// Package natstest runs a real nats-server with JetStream inside a test, on a random
// loopback port with its store in t.TempDir(), and sets jetflow up on it.
package natstest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/embedded"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Server is a running test server.
type Server struct {
	*server.Server
	// Dir is the JetStream store directory, kept for restarts.
	Dir string
	// Port is the client port, kept for restarts.
	Port int
	t    testing.TB
	log  *warnings
}

// warnings keeps the server's last warnings and errors, printed when a test fails: a
// server-side failure (an API error such as "error creating store for stream") carries
// its cause only in the server's log.
type warnings struct {
	mu    sync.Mutex
	lines []string
}

const keptWarnings = 100

func (w *warnings) logf(format string, args ...any) {
	if strings.HasPrefix(format, "nats: ") { // notices: too many, rarely the cause
		return
	}
	line := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lines) == keptWarnings {
		w.lines = append(w.lines[:0], w.lines[1:]...)
	}
	w.lines = append(w.lines, line)
}

func (w *warnings) report(t testing.TB) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !t.Failed() || len(w.lines) == 0 {
		return
	}
	t.Logf("the server's last %d warnings and errors:\n%s", len(w.lines), strings.Join(w.lines, "\n"))
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	ts := &Server{Dir: t.TempDir(), Port: -1, t: t, log: &warnings{}}
	t.Cleanup(func() { ts.log.report(t) }) // runs last, after the server is down
	ts.start()
	return ts
}

func (ts *Server) start() {
	ts.t.Helper()
	s, err := embedded.Start(embedded.Options{StoreDir: ts.Dir, Port: ts.Port, Logf: ts.log.logf})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.Server = s
	ts.Port = s.Addr().(*net.TCPAddr).Port
	ts.t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
}

// Stop shuts the server down (as for a restart).
func (ts *Server) Stop() {
	ts.Shutdown()
	ts.WaitForShutdown()
}

// Restart starts the server again on the same port and store.
func (ts *Server) Restart() {
	ts.t.Helper()
	ts.start()
}

// Connect opens a client connection that is closed when the test ends.
func (ts *Server) Connect(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(ts.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Setup runs jetflow setup with short ack waits for tests and returns the names.
func (ts *Server) Setup(t testing.TB, prefix string, ackWait time.Duration, extraTypes ...string) workflow.Names {
	t.Helper()
	names := workflow.MustNames(prefix)
	_, js := ts.Connect(t)
	cfg := setup.Config{Names: names}
	for _, typ := range append(workflow.BuiltinTypes(), extraTypes...) {
		cfg.Types = append(cfg.Types, setup.ConsumerConfig{Type: typ, AckWait: ackWait})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := setup.Run(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	return names
}

// Eventually polls cond every 20 ms until it holds or timeout passes, then fails the test
// with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
