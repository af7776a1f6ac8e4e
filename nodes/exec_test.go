package nodes_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/nodes"
)

func TestExecInputOnStdin(t *testing.T) {
	t.Parallel()
	const input = `{"input":{"id":7,"name":"a b \"c\""},"nodes":{"fetch":[1,2,3],"none":null}}`
	tests := []struct {
		name    string
		command any
	}{
		{"shell line", "cat"},
		{"argument list", []any{"cat"}},
		{"argument list through a shell", []any{"/bin/sh", "-c", "cat"}},
		{"shell pipeline", "cat | cat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustExec(t, newStep(map[string]any{"command": tt.command}, input))
			if got != input {
				t.Errorf("output = %s\nwant the input %s", got, input)
			}
		})
	}
}

func TestExecNoInputGivesEmptyStdin(t *testing.T) {
	t.Parallel()
	// A step without input feeds an empty stdin: cat prints nothing, so the output is null.
	got := mustExec(t, newStep(map[string]any{"command": "cat"}, ""))
	if got != "null" {
		t.Errorf("output = %s, want null", got)
	}
}

func TestExecArgumentListIsNotShellParsed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command []any
		want    string
	}{
		{
			name:    "shell syntax stays literal",
			command: []any{"printf", `"%s"`, "$HOME; echo `id` | cat"},
			want:    `"$HOME; echo ` + "`id`" + ` | cat"`,
		},
		{
			name:    "spaces stay in one argument",
			command: []any{"printf", `["%s"]`, "a  b   c"},
			want:    `["a  b   c"]`,
		},
		{
			name:    "non-string arguments as decoders produce them",
			command: []any{"printf", "[%s,%s,%s,%s]", float64(42), uint64(7), int64(-1), true},
			want:    "[42,7,-1,true]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustExec(t, newStep(map[string]any{"command": tt.command}, ""))
			if got != tt.want {
				t.Errorf("output = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestExecValidOutputs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command string
		want    string
	}{
		{"object", `echo '{"a":1,"b":[true,null]}'`, `{"a":1,"b":[true,null]}`},
		{"number", "echo 42", "42"},
		{"string", `echo '"hi"'`, `"hi"`},
		{"array", `echo '[1, 2]'`, `[1, 2]`},
		{"surrounding whitespace is trimmed", `printf '\n  {"a":1}  \n\n'`, `{"a":1}`},
		{"no trailing newline", `printf 'false'`, "false"},
		{"printed in pieces", `printf '{"a":'; printf '1}'`, `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustExec(t, newStep(map[string]any{"command": tt.command}, ""))
			if got != tt.want {
				t.Errorf("output = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestExecEmptyStdoutIsNull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command any
	}{
		{"true", "true"},
		{"true as a list", []any{"true"}},
		{"only a newline", "echo"},
		{"only whitespace", `printf ' \n\t \n'`},
		{"stderr only", "echo 'progress: 50%' >&2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustExec(t, newStep(map[string]any{"command": tt.command}, `{"input":1}`))
			if got != "null" {
				t.Errorf("output = %s, want null", got)
			}
		})
	}
}

func TestExecStdoutNotJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command string
		start   string // what the error quotes of stdout
	}{
		{"plain text", "echo hello world", "hello world"},
		{"two JSON values", "echo 1; echo 2", "1\\n2"},
		{"truncated object", `echo '{"a":'`, `{\"a\":`},
		{"trailing garbage", `echo '{"a":1} x'`, `{\"a\":1} x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runExec(t, newStep(map[string]any{"command": tt.command}, ""))
			requirePermanent(t, err, "stdout is not one JSON value", tt.start)
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecStdoutNotJSONQuotesOnlyItsStart(t *testing.T) {
	t.Parallel()
	out, err := runExec(t, newStep(map[string]any{
		"command": `printf 'BEGIN'; head -c 10000 /dev/zero | tr '\0' x; printf 'END'`,
	}, ""))
	requirePermanent(t, err, "stdout is not one JSON value", "BEGIN")
	if strings.Contains(err.Error(), "END") || len(err.Error()) > 200 {
		t.Errorf("error should quote only the start of stdout, got %d bytes: %.300q", len(err.Error()), err)
	}
	if out != nil {
		t.Errorf("output = %v, want nil on error", out)
	}
}

func TestExecEnvironment(t *testing.T) {
	t.Parallel()
	const script = `printf '{"run":"%s","node":"%s","workflow":"%s","attempt":"%s","key":"%s","greeting":"%s","count":"%s","flag":"%s"}' ` +
		`"$JETFLOW_RUN_ID" "$JETFLOW_NODE" "$JETFLOW_WORKFLOW" "$JETFLOW_ATTEMPT" "$JETFLOW_IDEMPOTENCY_KEY" "$GREETING" "$COUNT" "$FLAG"`
	tests := []struct {
		name string
		env  map[string]any
		want map[string]string
	}{
		{
			name: "identity and with.env",
			env:  map[string]any{"GREETING": "hi there", "COUNT": uint64(3), "FLAG": true},
			want: map[string]string{
				"run": "run-0001", "node": "charge", "workflow": "orders", "attempt": "2",
				"key": "run-0001.charge", "greeting": "hi there", "count": "3", "flag": "true",
			},
		},
		{
			name: "no with.env",
			want: map[string]string{
				"run": "run-0001", "node": "charge", "workflow": "orders", "attempt": "2",
				"key": "run-0001.charge", "greeting": "", "count": "", "flag": "",
			},
		},
		{
			name: "with.env cannot forge the step's identity",
			env: map[string]any{
				"JETFLOW_RUN_ID": "forged", "JETFLOW_NODE": "forged", "JETFLOW_WORKFLOW": "forged",
				"JETFLOW_ATTEMPT": "99", "JETFLOW_IDEMPOTENCY_KEY": "forged", "GREETING": "hello",
			},
			want: map[string]string{
				"run": "run-0001", "node": "charge", "workflow": "orders", "attempt": "2",
				"key": "run-0001.charge", "greeting": "hello", "count": "", "flag": "",
			},
		},
	}
	for _, tt := range tests {
		for _, form := range []struct {
			name    string
			command any
		}{{"shell line", script}, {"argument list", []any{"/bin/sh", "-c", script}}} {
			t.Run(tt.name+"/"+form.name, func(t *testing.T) {
				t.Parallel()
				with := map[string]any{"command": form.command}
				if tt.env != nil {
					with["env"] = tt.env
				}
				got := mustExec(t, newStep(with, ""))
				var m map[string]string
				if err := json.Unmarshal([]byte(got), &m); err != nil {
					t.Fatalf("decode %s: %v", got, err)
				}
				if !maps.Equal(m, tt.want) {
					t.Errorf("environment seen by the program = %v\nwant %v", m, tt.want)
				}
			})
		}
	}
}

func TestExecAttemptNumber(t *testing.T) {
	t.Parallel()
	for _, attempt := range []int{1, 2, 20} {
		t.Run(strconv.Itoa(attempt), func(t *testing.T) {
			t.Parallel()
			s := newStep(map[string]any{"command": `printf '%s' "$JETFLOW_ATTEMPT"`}, "")
			s.Attempt = attempt
			if got := mustExec(t, s); got != strconv.Itoa(attempt) {
				t.Errorf("JETFLOW_ATTEMPT = %s, want %d", got, attempt)
			}
		})
	}
}

func TestExecInheritsProcessEnvironment(t *testing.T) {
	t.Parallel()
	want, ok := os.LookupEnv("PATH")
	if !ok {
		t.Skip("PATH is not set")
	}
	got := mustExec(t, newStep(map[string]any{"command": []any{"/bin/sh", "-c", `printf '"%s"' "$PATH"`}}, ""))
	var path string
	if err := json.Unmarshal([]byte(got), &path); err != nil {
		t.Fatalf("decode %s: %v", got, err)
	}
	if path != want {
		t.Errorf("PATH seen by the program = %q, want the worker's %q", path, want)
	}
}

func TestExecDir(t *testing.T) {
	t.Parallel()

	t.Run("relative to the worker", func(t *testing.T) {
		t.Parallel()
		got := mustExec(t, newStep(map[string]any{"command": "cat greeting.json", "dir": filepath.Join("testdata", "workdir")}, ""))
		if want := `{"greeting":"hello from testdata"}`; got != want {
			t.Errorf("output = %s, want %s", got, want)
		}
	})

	for _, form := range []struct {
		name    string
		command any
	}{
		{"shell line", `printf '"%s"' "$(pwd -P)"`},
		{"argument list", []any{"/bin/sh", "-c", `printf '"%s"' "$(pwd -P)"`}},
	} {
		t.Run("absolute/"+form.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			want, err := filepath.EvalSymlinks(dir)
			if err != nil {
				t.Fatal(err)
			}
			got := mustExec(t, newStep(map[string]any{"command": form.command, "dir": dir}, ""))
			var pwd string
			if err := json.Unmarshal([]byte(got), &pwd); err != nil {
				t.Fatalf("decode %s: %v", got, err)
			}
			if pwd != want {
				t.Errorf("working directory = %q, want %q", pwd, want)
			}
		})
	}

	t.Run("empty means the worker's directory", func(t *testing.T) {
		t.Parallel()
		got := mustExec(t, newStep(map[string]any{"command": "cat testdata/workdir/greeting.json", "dir": ""}, ""))
		if want := `{"greeting":"hello from testdata"}`; got != want {
			t.Errorf("output = %s, want %s", got, want)
		}
	})

	t.Run("relative program in dir", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "tool.sh"), []byte("#!/bin/sh\necho '\"tool ran\"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		got := mustExec(t, newStep(map[string]any{"command": "./tool.sh", "dir": dir}, ""))
		if got != `"tool ran"` {
			t.Errorf("output = %s, want %q", got, `"tool ran"`)
		}
	})
}

// A dir that cannot be entered is a mistake in the definition: the error is permanent and
// names the directory, not the program.
func TestExecBadDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
	}{
		{"missing", filepath.Join(base, "no-such-dir")},
		{"a file", file},
	}
	for _, tt := range tests {
		for _, form := range []struct {
			name    string
			command any
		}{{"shell line", "true"}, {"argument list", []any{"true"}}, {"relative program", []any{"./run.sh"}}} {
			t.Run(tt.name+"/"+form.name, func(t *testing.T) {
				t.Parallel()
				out, err := runExec(t, newStep(map[string]any{"command": form.command, "dir": tt.dir}, ""))
				requirePermanent(t, err, "with.dir", tt.dir)
				if out != nil {
					t.Errorf("output = %v, want nil on error", out)
				}
			})
		}
	}
}

func TestExecNonZeroExitIsRetryable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command any
		want    []string
		exact   string
	}{
		{
			name:    "exit 3 with stderr",
			command: "echo 'disk on fire' >&2; exit 3",
			want:    []string{"exit status 3", "disk on fire"},
		},
		{
			name:    "exit 3 as an argument list",
			command: []any{"/bin/sh", "-c", "echo 'disk on fire' >&2; exit 3"},
			want:    []string{"exit status 3", "disk on fire"},
		},
		{
			name:    "stdout is ignored on failure",
			command: `echo '{"partial":true}'; echo 'half done' >&2; exit 2`,
			want:    []string{"exit status 2", "half done"},
		},
		{
			name:    "no stderr",
			command: "exit 1",
			exact:   "exec: exit status 1",
		},
		{
			name:    "stderr whitespace is trimmed",
			command: `printf '\n\n  boom  \n\n' >&2; exit 4`,
			exact:   "exec: exit status 4: boom",
		},
		{
			name:    "false",
			command: []any{"false"},
			exact:   "exec: exit status 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runExec(t, newStep(map[string]any{"command": tt.command}, `{"input":{}}`))
			requireRetryable(t, err, tt.want...)
			if tt.exact != "" && err.Error() != tt.exact {
				t.Errorf("err = %q, want %q", err, tt.exact)
			}
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecPermanentExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		command   string
		codes     any
		permanent bool
		want      string
	}{
		{"int64 as built in Go", "exit 3", []any{int64(3)}, true, "exit status 3"},
		{"uint64 as YAML decodes it", "exit 3", []any{uint64(3)}, true, "exit status 3"},
		{"float64 as JSON decodes it", "exit 3", []any{float64(3)}, true, "exit status 3"},
		{"int", "exit 3", []any{3}, true, "exit status 3"},
		{"one of several", "exit 3", []any{uint64(1), uint64(2), uint64(3)}, true, "exit status 3"},
		{"stderr kept", "echo 'bad input' >&2; exit 3", []any{float64(3)}, true, "bad input"},
		{"shell's command not found", "jetflow-no-such-program-x", []any{uint64(127)}, true, "exit status 127"},
		{"code not listed", "exit 3", []any{int64(4)}, false, "exit status 3"},
		{"empty list", "exit 3", []any{}, false, "exit status 3"},
		{"absent", "exit 3", nil, false, "exit status 3"},
		{"strings are not codes", "exit 3", []any{"3"}, false, "exit status 3"},
		{"shell's command not found, not listed", "jetflow-no-such-program-x", nil, false, "exit status 127"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			with := map[string]any{"command": tt.command}
			if tt.codes != nil {
				with["permanent_exit_codes"] = tt.codes
			}
			out, err := runExec(t, newStep(with, ""))
			if tt.permanent {
				requirePermanent(t, err, tt.want)
			} else {
				requireRetryable(t, err, tt.want)
			}
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecPermanentExitCodesDoNotAffectSuccess(t *testing.T) {
	t.Parallel()
	got := mustExec(t, newStep(map[string]any{"command": "echo 1", "permanent_exit_codes": []any{uint64(0)}}, ""))
	if got != "1" {
		t.Errorf("output = %s, want 1", got)
	}
}

func TestExecStderrTail(t *testing.T) {
	t.Parallel()
	const prefix = "exec: exit status 1: "
	tests := []struct {
		name    string
		command string
		last    string // must be in the error
		gone    []string
	}{
		{
			name: "many lines",
			// 1,000 lines of 10 bytes each, one write per line.
			command: `i=0; while [ $i -lt 1000 ]; do printf 'line-%04d\n' $i >&2; i=$((i+1)); done; exit 1`,
			last:    "line-0999",
			gone:    []string{"line-0000", "line-0001", "line-0500"},
		},
		{
			name:    "one big write",
			command: `{ printf 'FIRST'; head -c 10000 /dev/zero | tr '\0' x; printf '\nLAST LINE'; } >&2; exit 1`,
			last:    "LAST LINE",
			gone:    []string{"FIRST"},
		},
		{
			name:    "just over the limit",
			command: `{ printf 'FIRST'; head -c 2045 /dev/zero | tr '\0' y; printf 'LAST'; } >&2; exit 1`,
			last:    "LAST",
			gone:    []string{"FIRST"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := runExec(t, newStep(map[string]any{"command": tt.command}, ""))
			requireRetryable(t, err, prefix, tt.last)
			msg := err.Error()
			if !strings.HasSuffix(msg, tt.last) {
				t.Errorf("err should end with %q: ...%q", tt.last, msg[max(len(msg)-40, 0):])
			}
			for _, g := range tt.gone {
				if strings.Contains(msg, g) {
					t.Errorf("err holds %q from the start of stderr, want only the tail", g)
				}
			}
			if n := len(msg) - len(prefix); n > 2048 {
				t.Errorf("stderr in the error is %d bytes, want at most 2048", n)
			}
		})
	}
}

func TestExecStderrUnderLimitKeptWhole(t *testing.T) {
	t.Parallel()
	_, err := runExec(t, newStep(map[string]any{
		"command": `{ printf 'FIRST'; head -c 2000 /dev/zero | tr '\0' z; printf 'LAST'; } >&2; exit 1`,
	}, ""))
	requireRetryable(t, err, "FIRST", "LAST")
}

func TestExecCommandNotFound(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		command []any
	}{
		{"not on PATH", []any{"jetflow-no-such-program-x", "--flag"}},
		{"absolute path that does not exist", []any{filepath.Join(dir, "missing")}},
		{"relative path that does not exist", []any{"./jetflow-no-such-program-x"}},
		{"file without execute permission", []any{notExec}},
		{"a directory", []any{dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runExec(t, newStep(map[string]any{"command": tt.command}, `{"input":1}`))
			requirePermanent(t, err, "exec: ")
			if strings.Contains(err.Error(), "exec: exec:") {
				t.Errorf("error says exec twice: %v", err)
			}
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecMissingCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		with map[string]any
	}{
		{"nil with", nil},
		{"empty with", map[string]any{}},
		{"null command", map[string]any{"command": nil}},
		{"empty string", map[string]any{"command": ""}},
		{"blank string", map[string]any{"command": " \t\n "}},
		{"empty list", map[string]any{"command": []any{}}},
		{"list with an empty program", map[string]any{"command": []any{"", "x"}}},
		{"number", map[string]any{"command": int64(5)}},
		{"map", map[string]any{"command": map[string]any{"run": "echo"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runExec(t, newStep(tt.with, ""))
			requirePermanent(t, err, "with.command")
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecContextDeadline(t *testing.T) {
	t.Parallel()
	for _, form := range []struct {
		name    string
		command any
	}{{"shell line", "sleep 30"}, {"argument list", []any{"sleep", "30"}}} {
		t.Run(form.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			// Were the process not killed, sleep would exit 0 and Exec return null, no error.
			out, err := nodes.Exec(ctx, newStep(map[string]any{"command": form.command}, ""))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want one wrapping context.DeadlineExceeded", err)
			}
			requireRetryable(t, err, "exec: ")
			if out != nil {
				t.Errorf("output = %v, want nil on error", out)
			}
		})
	}
}

func TestExecContextAlreadyDone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := nodes.Exec(ctx, newStep(map[string]any{"command": []any{"touch", marker}}, ""))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want one wrapping context.Canceled", err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the program ran under a cancelled context (stat: %v)", err)
	}
}

// Cancelling the step kills the whole process group: a shell's background children too.
func TestExecKillsProcessGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	type result struct {
		out any
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := nodes.Exec(ctx, newStep(map[string]any{
			"command": `sleep 30 & echo $! > pid.tmp && mv pid.tmp pid; wait`,
			"dir":     dir,
		}, ""))
		done <- result{out, err}
	}()

	// Cancel only once the child is known, so the test does not depend on how fast the
	// shell starts.
	var pid int
	waitFor(t, 30*time.Second, "the shell to write the child's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	if processGone(pid) {
		t.Fatalf("child %d is not running before the cancel", pid)
	}
	cancel()

	var r result
	select {
	case r = <-done:
	case <-time.After(execLimit):
		t.Fatal("Exec did not return after its context was cancelled")
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v, want one wrapping context.Canceled", r.err)
	}
	requireRetryable(t, r.err)
	if r.out != nil {
		t.Errorf("output = %v, want nil on error", r.out)
	}
	waitFor(t, 10*time.Second, "the background child "+strconv.Itoa(pid)+" to be killed", func() bool {
		return processGone(pid)
	})
}

func TestExecStdoutTooLarge(t *testing.T) {
	t.Parallel()
	// A valid JSON string of 16 MiB + 3 bytes: only its size is wrong. (The limit itself is
	// tested without a process in buffers_internal_test.go.)
	out, err := runExec(t, newStep(map[string]any{
		"command": `printf '"'; head -c 16777217 /dev/zero | tr '\0' a; printf '"'`,
	}, ""))
	requirePermanent(t, err, "stdout is over 16777216 bytes")
	if out != nil {
		t.Errorf("output is %T, want nil on error", out)
	}
}

// A program's parent is the guarding shell; JETFLOW_WORKER_PID names the worker.
func TestExecWorkerPID(t *testing.T) {
	t.Parallel()
	out, err := runExec(t, newStep(map[string]any{"command": []any{"/bin/sh", "-c", `printf '[%s, %s]' "$JETFLOW_WORKER_PID" "$PPID"`}}, `{}`))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	if err := json.Unmarshal(out.(json.RawMessage), &pids); err != nil || len(pids) != 2 {
		t.Fatalf("output %s: %v", out, err)
	}
	if pids[0] != os.Getpid() || pids[1] == os.Getpid() {
		t.Fatalf("JETFLOW_WORKER_PID %d, $PPID %d; want the worker %d, and the guarding shell", pids[0], pids[1], os.Getpid())
	}
}
