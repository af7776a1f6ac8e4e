package main

import (
	"os"
	"runtime/debug"
)

// workerGCPercent is the garbage collector's target a worker process runs with unless GOGC
// is set. A worker's live heap is small (tens of MiB with 100,000 runs parked) and it
// allocates per step, so Go's default of 100 collects very often: at 400, `jetflow bench`
// spends 12–15 % less CPU per step (BENCHMARKS.md), for a heap that may grow to about five
// times the live one before a collection.
const workerGCPercent = 400

// workerGC sets the worker's GC target, unless the user set GOGC, and returns what undoes it.
func workerGC() (restore func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	old := debug.SetGCPercent(workerGCPercent)
	return func() { debug.SetGCPercent(old) }
}
