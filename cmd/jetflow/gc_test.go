package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestWorkerGC: a worker runs with its GC target unless GOGC is set, and restore puts the
// previous target back. Not parallel: it changes the process's GC target and environment.
func TestWorkerGC(t *testing.T) {
	if v, set := os.LookupEnv("GOGC"); set {
		t.Setenv("GOGC", v) // restored after the test
	}
	current := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	before := current()

	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	restore := workerGC()
	if got := current(); got != workerGCPercent {
		t.Errorf("GOGC unset: GC target %d, want %d", got, workerGCPercent)
	}
	restore()
	if got := current(); got != before {
		t.Errorf("after restore: GC target %d, want %d", got, before)
	}

	t.Setenv("GOGC", "100")
	restore = workerGC()
	if got := current(); got != before {
		t.Errorf("GOGC set: GC target changed to %d", got)
	}
	restore()
}
