package nodes_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/nodes"
)

// execLimit bounds every Exec call in these tests, so a broken kill path fails the test
// instead of hanging it.
const execLimit = time.Minute

// newStep returns a fresh step with its identity fields filled in.
func newStep(with map[string]any, input string) *consumer.Step {
	s := &consumer.Step{
		RunID:          "run-0001",
		Workflow:       "orders",
		Node:           "charge",
		Type:           "exec",
		Attempt:        2,
		IdempotencyKey: "run-0001.charge",
		With:           with,
	}
	if input != "" {
		s.Input = json.RawMessage(input)
	}
	return s
}

// runExec calls nodes.Exec with a context tied to the test.
func runExec(t *testing.T, s *consumer.Step) (any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), execLimit)
	defer cancel()
	return nodes.Exec(ctx, s)
}

// mustExec runs Exec, fails the test on error and returns the output as JSON text.
func mustExec(t *testing.T, s *consumer.Step) string {
	t.Helper()
	out, err := runExec(t, s)
	if err != nil {
		t.Fatalf("Exec(%v): %v", s.With["command"], err)
	}
	return rawJSON(t, out)
}

// rawJSON checks that out is a json.RawMessage holding valid JSON and returns it as text.
func rawJSON(t *testing.T, out any) string {
	t.Helper()
	raw, ok := out.(json.RawMessage)
	if !ok {
		t.Fatalf("output is %T (%v), want json.RawMessage", out, out)
	}
	if !json.Valid(raw) {
		t.Fatalf("output %q is not valid JSON", raw)
	}
	return string(raw)
}

func isPermanent(err error) bool {
	var pe *consumer.PermanentError
	return errors.As(err, &pe)
}

// requirePermanent fails unless err is a *consumer.PermanentError whose message holds every
// one of want.
func requirePermanent(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("err is nil, want a permanent error")
	}
	if !isPermanent(err) {
		t.Fatalf("err %q (%T) is not a *consumer.PermanentError", err, err)
	}
	requireContains(t, err, want...)
}

// requireRetryable fails unless err is a plain error: not permanent, not parked, no
// retry-after.
func requireRetryable(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("err is nil, want a retryable error")
	}
	var pk *consumer.ParkError
	var ra *consumer.RetryAfterError
	if isPermanent(err) || errors.As(err, &pk) || errors.As(err, &ra) {
		t.Fatalf("err %q (%T) should be a plain retryable error", err, err)
	}
	requireContains(t, err, want...)
}

func requireContains(t *testing.T, err error, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err %q does not contain %q", err, w)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processGone reports whether pid no longer runs. A zombie counts as gone: it has been
// killed, and in a container nothing may reap it.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state == 'Z' || state == 'X'
}
