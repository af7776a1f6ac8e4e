//go:build linux

package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
