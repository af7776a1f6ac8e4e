package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// jetflowBin is the real binary, built once by TestMain for the subprocess tests
// (badinput_test.go, crash_test.go).
var jetflowBin string

// examplesDir holds the example workflows shipped with the repo.
const examplesDir = "../../examples"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jetflow-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "jetflow")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/jetflow: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	jetflowBin = bin
	// Subprocesses (the built binary, exec nodes' shells) are not goroutines: goleak does
	// not see them; the tests kill each one they start by PID in t.Cleanup.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// result is what one CLI invocation did.
type result struct {
	err            error
	code           int
	stdout, stderr string
}

// msg is the line main() prints on stderr for r.err.
func (r result) msg() string {
	if r.err == nil || isSilent(r.err) {
		return ""
	}
	return "jetflow: " + oneLine(r.err.Error())
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, err %v\nstdout:\n%s\nstderr:\n%s", r.code, r.err, r.stdout, r.stderr)
}

// runCLI calls run in-process, as main does, and turns a panic into a test failure.
func runCLI(t testing.TB, ctx context.Context, stdin string, args ...string) (r result) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("jetflow %s panicked: %v", strings.Join(args, " "), p)
		}
	}()
	err := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return result{err: err, code: exitCode(err), stdout: stdout.String(), stderr: stderr.String()}
}

// testEnv is a fresh server with jetflow set up through the CLI under a prefix of its own.
type testEnv struct {
	t      testing.TB
	srv    *natstest.Server
	url    string
	prefix string
}

var prefixChars = regexp.MustCompile(`[^a-z0-9_-]+`)

// newEnv starts a server and runs `jetflow setup` on it.
func newEnv(t testing.TB) *testEnv {
	t.Helper()
	srv := natstest.Start(t)
	prefix := strings.Trim(prefixChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	e := &testEnv{t: t, srv: srv, url: srv.ClientURL(), prefix: prefix}
	if r := e.cli("setup"); r.code != 0 {
		t.Fatalf("setup: %s", r)
	}
	return e
}

// flags are the connection flags of this env.
func (e *testEnv) flags() []string { return []string{"--nats", e.url, "--prefix", e.prefix} }

// cli runs the CLI in-process against this env, with a bounded context.
func (e *testEnv) cli(args ...string) result {
	e.t.Helper()
	return e.cliIn("", args...)
}

// cliIn is cli with standard input.
func (e *testEnv) cliIn(stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return runCLI(e.t, ctx, stdin, append(args, e.flags()...)...)
}

// apply applies the example workflows.
func (e *testEnv) apply() {
	e.t.Helper()
	if r := e.cli("workflows", "apply", examplesDir); r.code != 0 {
		e.t.Fatalf("workflows apply: %s", r)
	}
}

// worker runs `jetflow worker` in-process until the test ends, and returns its output.
func (e *testEnv) worker(extra ...string) *lockedBuffer {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan error, 1)
	args := append(append([]string{"worker", "--drain-timeout", "5s"}, extra...), e.flags()...)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("worker panicked: %v", p)
			}
		}()
		done <- run(ctx, args, strings.NewReader(""), out, out)
	}()
	// Registered after natstest.Start's cleanup, so it runs first: the worker stops before
	// the server does.
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("worker: %v\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			e.t.Errorf("worker did not stop within 30 s of its context ending\n%s", out.String())
		}
	})
	return out
}

// lockedBuffer is a bytes.Buffer safe for the worker's logger and the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
