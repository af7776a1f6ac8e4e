// Package embedded starts an in-process nats-server with JetStream, bound to loopback. It
// serves `jetflow dev` and the tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the server stores data and which port it takes.
type Options struct {
	// StoreDir is the JetStream store directory (required).
	StoreDir string
	// Port to listen on; -1 picks a free one.
	Port int
	// Logf, when set, receives the server's notices and errors.
	Logf func(format string, args ...any)
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	opts := &server.Options{
		ServerName: "jetflow-dev",
		Host:       "127.0.0.1",
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      o.Logf == nil,
		NoSigs:     true,
		// The dev server holds the workflows of one laptop: let a step message be as large
		// as the hard payload limit.
		MaxPayload: 32 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if o.Logf != nil {
		s.SetLoggerV2(logger{o.Logf}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats-server did not start within 30 s")
	}
	return s, nil
}

// PortFree reports whether 127.0.0.1:port can be bound.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

type logger struct{ logf func(string, ...any) }

func (l logger) Noticef(format string, v ...any) { l.logf("nats: "+format, v...) }
func (l logger) Warnf(format string, v ...any)   { l.logf("nats warning: "+format, v...) }
func (l logger) Fatalf(format string, v ...any)  { l.logf("nats fatal: "+format, v...) }
func (l logger) Errorf(format string, v ...any)  { l.logf("nats error: "+format, v...) }
func (l logger) Debugf(format string, v ...any)  {}
func (l logger) Tracef(format string, v ...any)  {}
