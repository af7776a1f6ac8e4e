package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unreachable is a NATS URL nothing listens on.
const unreachable = "nats://127.0.0.1:1"

// badCase is one bad invocation: its args (the env's --nats and --prefix are added unless
// the case gives its own), the exit code it must give, and text its one-line error must
// hold. bug, when set, names a known bug that makes the case fail: it is skipped.
type badCase struct {
	name string
	args []string
	code int
	want string
	bug  string
}

// withFlags adds the env's connection flags that args does not set itself.
func (e *testEnv) withFlags(args []string) []string {
	out := slices.Clone(args)
	f := e.flags()
	for i := 0; i < len(f); i += 2 {
		if !slices.Contains(args, f[i]) {
			out = append(out, f[i], f[i+1])
		}
	}
	return out
}

func badCases(t *testing.T) []badCase {
	oversized := `{"s":"` + strings.Repeat("x", 2000) + `"}` // over the --max-input below
	bad := func(f string) string { return filepath.Join("testdata", "bad", f) }
	return []badCase{
		{"cycle", []string{"workflows", "validate", bad("cycle.yaml")}, exitUsage, "cycle", ""},
		{"cycle on apply", []string{"workflows", "apply", bad("cycle.yaml")}, exitUsage, "cycle", ""},
		{"broken YAML", []string{"workflows", "validate", bad("broken-yaml.yaml")}, exitUsage, "broken-yaml.yaml:", ""},
		{"unknown parent", []string{"workflows", "validate", bad("unknown-parent.yaml")}, exitUsage, "nope", ""},
		{"bad node name", []string{"workflows", "validate", bad("bad-node-name.yaml")}, exitUsage, "fetch.data now", ""},
		{"unknown field", []string{"workflows", "validate", bad("unknown-field.yaml")}, exitUsage, "neds", ""},
		{"missing definition file", []string{"workflows", "validate", bad("nope.yaml")}, exitUsage, "nope.yaml", ""},
		{"unknown workflow on start", []string{"start", "nosuch"}, exitUsage, `unknown workflow "nosuch"`, ""},
		{"unknown workflow on graph", []string{"workflows", "graph", "nosuch"}, exitUsage, `unknown workflow "nosuch"`, ""},
		{"bad workflow name on start", []string{"start", "no.such"}, exitUsage, "no.such", ""},
		{"non-JSON --input", []string{"start", "diamond", "--input", `{"n":`}, exitUsage, "not valid JSON", ""},
		{"two JSON values --input", []string{"start", "diamond", "--input", `{} {}`}, exitUsage, "--input", ""},
		{"oversized --input", []string{"start", "diamond", "--input", oversized, "--max-input", "1000"}, exitUsage, "the limit is 1000 bytes", ""},
		{"worker --max-payload 0", []string{"worker", "--max-payload", "0"}, exitUsage, "--max-payload", ""},
		{"dev --max-payload -1", []string{"dev", "--max-payload", "-1"}, exitUsage, "--max-payload", ""},
		{"a node type named start", []string{"workflows", "validate", bad("start-type.yaml")}, exitUsage, "reserved", ""},
		{"--input @missing-file", []string{"start", "diamond", "--input", "@" + filepath.Join(t.TempDir(), "missing.json")}, exitUsage, "missing.json", ""},
		{"bad --id", []string{"start", "diamond", "--id", "a.b"}, exitUsage, "--id", ""},
		{"unknown flag", []string{"start", "diamond", "--bogus"}, exitUsage, "--bogus", ""},
		{"bad flag value", []string{"start", "diamond", "--wait", "--timeout", "soon"}, exitUsage, "soon", ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, "frobnicate", ""},
		{"unknown command close to a real one", []string{"strat", "diamond"}, exitUsage, "strat", ""}, //nolint:misspell // the typo is the test
		{"unknown subcommand", []string{"workflows", "frobnicate"}, exitUsage, "frobnicate", ""},
		{"unknown runs subcommand", []string{"runs", "frobnicate"}, exitUsage, "frobnicate", ""},
		{"unknown dlq subcommand", []string{"dlq", "frobnicate"}, exitUsage, "frobnicate", ""},
		{"missing argument", []string{"start"}, exitUsage, "arg", ""},
		{"missing run ID", []string{"runs", "get"}, exitUsage, "arg", ""},
		{"extra argument", []string{"workflows", "ls", "extra"}, exitUsage, "extra", ""},
		{"bad --prefix", []string{"workflows", "ls", "--prefix", "Bad.Prefix"}, exitUsage, "--prefix", ""},
		{"tuning without --type", []string{"setup", "--ack-wait", "2s"}, exitUsage, "--type", ""},
		{"dev --concurrency 0", []string{"dev", "--concurrency", "0"}, exitUsage, "--concurrency", ""},
		{"dev --retention 0", []string{"dev", "--retention", "0s"}, exitUsage, "--retention", ""},
		{"worker --concurrency 0", []string{"worker", "--concurrency", "0"}, exitUsage, "--concurrency", ""},
		{"concurrency out of range", []string{"workflows", "validate", bad("concurrency.yaml")}, exitUsage, "concurrency -2", ""},
		{"runs get unknown ID", []string{"runs", "get", "no-such-run"}, exitFailed, "no-such-run", ""},
		{"runs get bad ID", []string{"runs", "get", "../etc"}, exitFailed, "../etc", ""},
		{"NATS unreachable", []string{"workflows", "ls", "--nats", unreachable}, exitFailed, "cannot reach NATS", ""},
		{"NATS unreachable on start", []string{"start", "diamond", "--nats", unreachable}, exitFailed, "cannot reach NATS", ""},
		{"unknown services subcommand", []string{"services", "frobnicate"}, exitUsage, "frobnicate", ""},
		{"services ls with an argument", []string{"services", "ls", "extra"}, exitUsage, "extra", ""},
		{"NATS unreachable on services ls", []string{"services", "ls", "--nats", unreachable}, exitFailed, "cannot reach NATS", ""},
	}
}

// TestBadInput checks that each bad invocation exits with the right code, says what was
// wrong on one line, and does not panic.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	for _, tc := range badCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bug != "" {
				t.Skip("known bug: " + tc.bug)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r := runCLI(t, ctx, "", e.withFlags(tc.args)...) // runCLI fails on a panic
			if r.code != tc.code {
				t.Errorf("exit %d, want %d: %s", r.code, tc.code, r)
			}
			if r.err == nil {
				t.Fatalf("no error: %s", r)
			}
			if s := r.err.Error(); strings.ContainsAny(s, "\r\n") {
				t.Errorf("the error spans lines (main keeps only the first): %q", s)
			}
			m := r.msg()
			if m == "jetflow: " || !strings.Contains(m, tc.want) {
				t.Errorf("message %q should mention %q", m, tc.want)
			}
			for _, bad := range []string{"panic", "goroutine "} {
				if strings.Contains(m, bad) || strings.Contains(r.stderr, bad) {
					t.Errorf("output shows %q: %s", bad, r)
				}
			}
		})
	}
}

// TestBadInputBinary runs a few bad invocations through the real binary: stderr is exactly
// one line, the exit code is right, and nothing shows a stack.
func TestBadInputBinary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	keep := map[string]bool{
		"broken YAML":                         true,
		"non-JSON --input":                    true,
		"unknown command":                     true,
		"unknown command close to a real one": true,
		"runs get unknown ID":                 true,
		"NATS unreachable":                    true,
	}
	for _, tc := range badCases(t) {
		if !keep[tc.name] {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, jetflowBin, e.withFlags(tc.args)...)
			cmd.Env = append(os.Environ(), "NATS_URL=", "JETFLOW_PREFIX=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = 5 * time.Second
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("want an exit error, got %v\nstderr: %s", err, stderr.String())
			}
			if ee.ExitCode() != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", ee.ExitCode(), tc.code, stderr.String())
			}
			se := stderr.String()
			if !strings.HasPrefix(se, "jetflow: ") || !strings.HasSuffix(se, "\n") || strings.Count(se, "\n") != 1 {
				t.Errorf("stderr should be exactly one line starting with \"jetflow: \": %q", se)
			}
			if !strings.Contains(se, tc.want) {
				t.Errorf("stderr %q should mention %q", se, tc.want)
			}
			for _, bad := range []string{"panic", "goroutine "} {
				if strings.Contains(se, bad) || strings.Contains(stdout.String(), bad) {
					t.Errorf("output shows %q:\nstdout: %s\nstderr: %s", bad, stdout.String(), se)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("a failed command should print nothing on stdout: %q", stdout.String())
			}
		})
	}
}
