//go:build linux

package chaos

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Binaries built once per test binary by TestMain.
var (
	jetflowBin string // the real `jetflow` CLI
	natsBin    string // nats-server at the version go.mod pins
	hangBin    string // internal/hangworker: a worker whose handler ignores its context
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "jetflow-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	jetflowBin = filepath.Join(dir, "jetflow")
	natsBin = filepath.Join(dir, "nats-server")
	hangBin = filepath.Join(dir, "hangworker")
	for _, b := range []struct{ out, pkg string }{
		{jetflowBin, "github.com/jetflow-dev/jetflow/cmd/jetflow"},
		// nats-server's module root is its main package.
		{natsBin, "github.com/nats-io/nats-server/v2"},
		{hangBin, "github.com/jetflow-dev/jetflow/chaos/internal/hangworker"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	// No goleak here: what this package starts are processes, and each test kills the ones
	// it started (by PID) in t.Cleanup.
	return m.Run()
}

var trackOnce sync.Once

// trackSources stats every file the binaries are built from (the module's Go files, go.mod,
// go.sum), once per test binary. Go's test cache sees only what the test itself opens or
// stats, and this package does not import the worker, the exec node or the CLI: without
// this, `go test ./...` would serve a stale result after a change to any of them.
func trackSources() {
	trackOnce.Do(func() {
		_ = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
			switch {
			case err != nil:
				return nil
			case d.IsDir() && path != ".." && strings.HasPrefix(d.Name(), "."):
				return filepath.SkipDir
			case !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum"):
				_, _ = os.Stat(path)
			}
			return nil
		})
	})
}
