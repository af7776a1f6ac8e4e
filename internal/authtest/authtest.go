// Package authtest runs real nats-servers that demand authentication, for the tests of
// jetflow's NATS auth flags and role permissions: it makes the credentials (passwords,
// nkeys, operator/account/user JWTs, a CA with server and client certificates), starts a
// server configured for them, and records the authorization and permission violations the
// server logs. Nothing here is a mock: every server is a real nats-server with JetStream.
package authtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is a running nats-server with its violation log.
type Server struct {
	*server.Server
	// URL is the client URL (nats://127.0.0.1:<port>); clients upgrade to TLS when the
	// server requires it.
	URL string
	// Log holds the authorization and permission violations the server logged.
	Log *ViolationLog
}

// Start runs a nats-server with opts on 127.0.0.1, a random port and JetStream stored in
// t.TempDir(); Host, Port, JetStream, StoreDir, NoLog and NoSigs are overwritten, every auth
// setting is kept. The server stops when the test ends.
func Start(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoLog = true
	opts.NoSigs = true
	// A TLS handshake on a loaded CI machine under -race can take longer than the
	// default 2 s.
	if opts.TLSConfig != nil && opts.TLSTimeout == 0 {
		opts.TLSTimeout = 30
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	log := &ViolationLog{}
	s.SetLoggerV2(log, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not start within 30 s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	port := s.Addr().(*net.TCPAddr).Port
	return &Server{Server: s, URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Log: log}
}

// LoadConfig parses a nats-server configuration file (includes resolve next to it) into
// options for Start. vars are prepended to a copy of the file as variable definitions
// (`NAME = "value"`), so a file that reads its secrets from the environment ($NAME) can be
// loaded without touching the process environment, which parallel tests share.
func LoadConfig(t testing.TB, path string, vars map[string]string) *server.Options {
	t.Helper()
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for name, value := range vars {
		fmt.Fprintf(&b, "%s = %q\n", name, value)
	}
	b.Write(conf)
	dir := t.TempDir()
	// Keep the file's own includes working: copy its siblings next to the copy.
	siblings, err := filepath.Glob(filepath.Join(filepath.Dir(path), "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range siblings {
		if filepath.Base(s) == filepath.Base(path) {
			continue
		}
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(s)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyPath := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(copyPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(copyPath)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return opts
}

// ViolationLog is a server logger that keeps the lines about refused connections
// ("authentication error") and permission violations, and drops the rest.
type ViolationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *ViolationLog) keep(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if low := strings.ToLower(line); strings.Contains(low, "violation") || strings.Contains(low, "authentication error") {
		l.mu.Lock()
		l.lines = append(l.lines, line)
		l.mu.Unlock()
	}
}

// Noticef implements server.Logger.
func (l *ViolationLog) Noticef(format string, v ...any) { l.keep(format, v...) }

// Warnf implements server.Logger.
func (l *ViolationLog) Warnf(format string, v ...any) { l.keep(format, v...) }

// Fatalf implements server.Logger.
func (l *ViolationLog) Fatalf(format string, v ...any) { l.keep(format, v...) }

// Errorf implements server.Logger.
func (l *ViolationLog) Errorf(format string, v ...any) { l.keep(format, v...) }

// Debugf implements server.Logger.
func (l *ViolationLog) Debugf(string, ...any) {}

// Tracef implements server.Logger.
func (l *ViolationLog) Tracef(string, ...any) {}

// Lines returns every violation logged so far.
func (l *ViolationLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Matching returns the violations whose line contains every one of parts.
func (l *ViolationLog) Matching(parts ...string) []string {
	var out []string
	for _, line := range l.Lines() {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}
