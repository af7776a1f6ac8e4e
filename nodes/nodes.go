// Package nodes holds jetflow's built-in node types: exec (run a program: JSON in on stdin,
// JSON out on stdout), http (call an HTTP API), sleep (wait without holding a worker slot) and
// noop.
package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Register adds every built-in node type to w.
func Register(w *consumer.Worker) {
	w.Handle("exec", Exec)
	w.Handle("http", HTTP)
	w.Handle("sleep", Sleep)
	w.Handle("noop", Noop)
	w.Handle(workflow.SubflowType, subflow)
	w.Handle(workflow.WaitType, wait)
	w.Handle(workflow.ServiceType, Service(w.JetStream().Conn()))
}

// wait is the handler of the wait type, which the engine runs itself (it parks the node
// until its signal or its timeout); a step that reaches it is a bug, and fails permanently.
func wait(context.Context, *consumer.Step) (any, error) {
	return nil, consumer.Permanent(errors.New("a wait node runs no handler: the worker parks it until its signal"))
}

// subflow is the handler of the workflow type, which the engine runs itself (it starts the
// child run and waits for it); a step that reaches it is a bug, and fails permanently.
func subflow(context.Context, *consumer.Step) (any, error) {
	return nil, consumer.Permanent(errors.New("a workflow node runs no handler: the worker starts its child run"))
}

// Noop returns with.output, or null: a step that does nothing, for tests and benchmarks.
func Noop(_ context.Context, s *consumer.Step) (any, error) {
	return s.With["output"], nil
}

// Sleep waits with.duration, parked through the schedule path: it holds no worker slot and
// no ack-pending slot while it waits.
func Sleep(_ context.Context, s *consumer.Step) (any, error) {
	ds, _ := s.With["duration"].(string)
	d, err := time.ParseDuration(ds)
	if err != nil || d <= 0 {
		return nil, consumer.Permanent(fmt.Errorf("sleep: with.duration %q must be a positive duration such as \"30s\"", ds))
	}
	now := time.Now()
	switch {
	case s.NotBefore.IsZero():
		return nil, consumer.Park(now.Add(d))
	case now.Before(s.NotBefore.Add(-50 * time.Millisecond)):
		return nil, consumer.Park(s.NotBefore)
	}
	return map[string]any{"slept": d.String()}, nil
}

// Limits of the exec node.
const (
	maxStdout   = 16 << 20
	stderrTail  = 2048
	killTimeout = 5 * time.Second
)

// Exec runs with.command (a shell line run by /bin/sh -c, or a list of arguments) with the
// node's input as JSON on stdin, and takes one JSON value from stdout as the output. Exit 0 is
// success; an exit code listed in with.permanent_exit_codes is a permanent failure; any other
// exit is retried. The last lines of stderr go into the error. The environment carries
// JETFLOW_RUN_ID, JETFLOW_NODE, JETFLOW_WORKFLOW, JETFLOW_ATTEMPT, JETFLOW_IDEMPOTENCY_KEY
// and JETFLOW_WORKER_PID (the program's parent is a guarding shell), plus with.env.
func Exec(ctx context.Context, s *consumer.Step) (any, error) {
	// The guard shell: if the worker dies, the shell gets SIGTERM (Pdeathsig below) and takes
	// its whole process group with it, so no child outlives the worker to do its side effect
	// beside the re-run. The command runs in the background while the shell waits (a trap
	// interrupts a wait at once, not a foreground command), and keeps the node input on its
	// standard input through fd 3.
	const guardHead, guardTail = "trap 'kill -KILL 0' TERM\nexec 3<&0\n", " <&3 3<&- &\nwait $!"
	var argv []string
	guarded := false
	switch c := s.With["command"].(type) {
	case string:
		if strings.TrimSpace(c) != "" {
			argv = []string{"/bin/sh", "-c", guardHead + "{\n" + c + "\n}" + guardTail}
			guarded = true
		}
	case []any:
		for _, a := range c {
			argv = append(argv, fmt.Sprint(a))
		}
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, consumer.Permanent(errors.New("exec: with.command is missing or empty"))
	}
	dir, _ := s.With["dir"].(string)
	if dir != "" {
		// Check here: a failed chdir in the child reads as "fork/exec /bin/sh: no such file
		// or directory", which names the program, not the directory.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			if err == nil {
				err = errors.New("not a directory")
			}
			return nil, consumer.Permanent(fmt.Errorf("exec: with.dir %q cannot be used: %w", dir, err))
		}
	}
	if !guarded {
		// A program given as a list of arguments runs under the same guard as a shell line:
		// Pdeathsig reaches only the direct child, so the children a program starts would
		// outlive a killed worker. The program is looked up here, so that a missing one
		// stays a clear permanent error (not the shell's exit 127).
		prog, err := lookPath(argv[0], dir)
		if err != nil {
			return nil, consumer.Permanent(err) // exec.Error already says "exec: …"
		}
		if guardShellOK() {
			argv = append([]string{"/bin/sh", "-c", guardHead + `"$@"` + guardTail, "jetflow-exec", prog}, argv[1:]...)
			guarded = true
		}
	}
	// A program run directly (no /bin/sh) is killed outright if the worker dies.
	pdeath := syscall.SIGKILL
	if guarded {
		pdeath = syscall.SIGTERM
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Its own process group, so a timeout stops the program's children too; and killed if the
	// worker dies (Linux), so a crashed worker leaves no handler running beside the retry.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: pdeath}
	cmd.Cancel = func() error {
		// Stop the whole process group: a shell's children too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = killTimeout
	cmd.Dir = dir
	env := os.Environ()
	if m, ok := s.With["env"].(map[string]any); ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			env = append(env, k+"="+fmt.Sprint(m[k]))
		}
	}
	env = append(env,
		"JETFLOW_RUN_ID="+s.RunID,
		"JETFLOW_NODE="+s.Node,
		"JETFLOW_WORKFLOW="+s.Workflow,
		"JETFLOW_ATTEMPT="+strconv.Itoa(s.Attempt),
		"JETFLOW_IDEMPOTENCY_KEY="+s.IdempotencyKey,
		// The program's parent is the guarding shell, not the worker.
		"JETFLOW_WORKER_PID="+strconv.Itoa(os.Getpid()),
	)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(s.Input)
	var stdout limitedBuffer
	stdout.max = maxStdout
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		tail := strings.TrimSpace(stderr.String())
		if tail != "" {
			tail = ": " + tail
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() >= 0 {
			code := ee.ExitCode()
			e := fmt.Errorf("exec: exit status %d%s", code, tail)
			if slices.Contains(permanentCodes(s.With["permanent_exit_codes"]), code) {
				return nil, consumer.Permanent(e)
			}
			return nil, e
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("exec: %w%s", ctx.Err(), tail)
		}
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, consumer.Permanent(fmt.Errorf("exec: %w", err))
		}
		return nil, fmt.Errorf("exec: %w%s", err, tail)
	}
	if stdout.over {
		return nil, consumer.Permanent(fmt.Errorf("exec: stdout is over %d bytes", maxStdout))
	}
	out := bytes.TrimSpace(stdout.Bytes())
	if len(out) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(out) {
		return nil, consumer.Permanent(fmt.Errorf("exec: stdout is not one JSON value (starts %q); print JSON, or nothing", preview(out)))
	}
	return json.RawMessage(out), nil
}

// lookPath finds the program name as exec.Command would, with a relative path taken from
// dir (the directory it will run in) when dir is set.
func lookPath(name, dir string) (string, error) {
	if dir != "" && strings.Contains(name, "/") && !filepath.IsAbs(name) {
		if _, err := exec.LookPath(filepath.Join(dir, name)); err != nil {
			return "", err
		}
		return name, nil
	}
	return exec.LookPath(name)
}

// guardShellOK reports whether /bin/sh is there to guard a program's process group.
var guardShellOK = sync.OnceValue(func() bool {
	fi, err := os.Stat("/bin/sh")
	return err == nil && !fi.IsDir()
})

func preview(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

func permanentCodes(v any) []int {
	list, _ := v.([]any)
	var out []int
	for _, x := range list {
		switch n := x.(type) {
		case int:
			out = append(out, n)
		case int64:
			out = append(out, int(n))
		case uint64:
			out = append(out, int(n))
		case float64:
			out = append(out, int(n))
		}
	}
	return out
}

// limitedBuffer keeps at most max bytes and notes whether more came. It does not embed
// bytes.Buffer: the promoted ReadFrom would let io.Copy (which os/exec uses to drain the
// pipe) bypass Write and the limit.
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// Bytes returns what was kept.
func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

// tailBuffer keeps the last stderrTail bytes written.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*stderrTail {
		t.b = append(t.b[:0], t.b[len(t.b)-stderrTail:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	b := t.b
	if len(b) > stderrTail {
		b = b[len(b)-stderrTail:]
	}
	return string(b)
}
