package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// WatermillBinary is the name of the Watermill baseline's command, built from the module in
// bench/watermill of jetflow's repository.
const WatermillBinary = "jetflow-bench-watermill"

// WatermillConfig sizes a run of the Watermill chain. The sizes mean what they mean in
// PipelineConfig.
type WatermillConfig struct {
	// Bin is the jetflow-bench-watermill executable.
	Bin string
	// Env is the child's environment: NATS_URL and the credentials variables it reads
	// (never a command-line argument, so no secret shows in a process list).
	Env []string
	// Prefix names the chain's topics; they must not exist, and the child deletes them.
	Prefix                                      string
	Runs, Steps, Concurrency, Payload, Replicas int
	// Stall is how long the child waits without a run ending before it gives up.
	Stall time.Duration
}

// Watermill runs the Watermill chain in a child process and returns what it measured. The
// child's CPU time is its own (the Watermill client), never the server's.
func Watermill(ctx context.Context, cfg WatermillConfig) (Result, error) {
	cfg.Stall = max(cfg.Stall, time.Second)
	args := []string{
		"--prefix", cfg.Prefix, "--runs", strconv.Itoa(cfg.Runs), "--steps", strconv.Itoa(cfg.Steps),
		"--concurrency", strconv.Itoa(cfg.Concurrency), "--payload", strconv.Itoa(cfg.Payload),
		"--replicas", strconv.Itoa(max(cfg.Replicas, 1)), "--stall", cfg.Stall.String(),
	}
	cmd := exec.CommandContext(ctx, cfg.Bin, args...)
	cmd.Env = cfg.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := lastLine(stderr.String()); msg != "" {
			return Result{}, fmt.Errorf("%s: %s", filepath.Base(cfg.Bin), msg)
		}
		return Result{}, fmt.Errorf("%s: %w", filepath.Base(cfg.Bin), err)
	}
	var out struct {
		Runs      int     `json:"runs"`
		Steps     int     `json:"steps"`
		Seconds   float64 `json:"seconds"`
		CPUMicros int64   `json:"cpu_us"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Result{}, fmt.Errorf("%s printed no result: %w", filepath.Base(cfg.Bin), err)
	}
	if out.Runs != cfg.Runs {
		return Result{}, fmt.Errorf("%s: %d of %d runs ended", filepath.Base(cfg.Bin), out.Runs, cfg.Runs)
	}
	return Result{
		Runs: out.Runs, Steps: out.Steps,
		Elapsed: time.Duration(out.Seconds * float64(time.Second)),
		CPU:     time.Duration(out.CPUMicros) * time.Microsecond,
	}, nil
}

// FindWatermill returns the Watermill baseline's executable: bin when given; else
// jetflow-bench-watermill beside the running executable, in ./bin or on PATH; else, inside
// jetflow's repository (its bench/watermill holds the module), one built now into dir with
// the go command. how says which, for the report.
func FindWatermill(ctx context.Context, bin, dir string) (path, how string, err error) {
	if bin != "" {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", "", fmt.Errorf("--watermill %s: %w", bin, errors.Unwrap(err))
		}
		return p, p, nil
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), WatermillBinary); isExecutable(p) {
			return p, p, nil
		}
	}
	if p := filepath.Join("bin", WatermillBinary); isExecutable(p) {
		return p, p, nil
	}
	if p, err := exec.LookPath(WatermillBinary); err == nil {
		return p, p, nil
	}
	src, ok := watermillSource()
	if !ok {
		return "", "", fmt.Errorf("no %s here: build it from jetflow's repository (cd bench/watermill && go build -o ../../bin/%s .) or name it with --watermill", WatermillBinary, WatermillBinary)
	}
	out := filepath.Join(dir, WatermillBinary)
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", "", err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", abs, ".")
	build.Dir = src
	var stderr bytes.Buffer
	build.Stderr = &stderr
	if err := build.Run(); err != nil {
		return "", "", fmt.Errorf("build %s: %s", src, cmp.Or(lastLine(stderr.String()), err.Error()))
	}
	return abs, "built from " + src, nil
}

// watermillSource is the bench/watermill directory of the jetflow repository the working
// directory is in, looking up from it.
func watermillSource() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		src := filepath.Join(dir, "bench", "watermill")
		if _, err := os.Stat(filepath.Join(src, "go.mod")); err == nil {
			return src, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
