// Command testsummary reads the JSON events of `go test -json` (test2json) on its standard
// input and writes what a plain `go test` would show, plus a summary: CI's evidence of what
// ran.
//
//	go test -race -json ./... | go run ./internal/cmd/testsummary
//
// It writes, as the events arrive: the compiler's output of a package that did not build;
// the "ok" (or "?  … [no test files]") line of each package that passed; the whole output of
// each failed test (its log, "--- FAIL" line, panic and stack), of a test that never ended
// (a timeout's panic, a binary that died), and of a package that failed outside any test; and
// the reason of each skipped test with its "--- SKIP" line. At the end, one line per package,
//
//	github.com/jetflow-dev/jetflow/workflow: 212 run, 1 skipped, 0 failed
//
// ("run" counts the tests that ran, failed ones included, skipped ones not; subtests, examples
// and fuzz targets count as tests; a package that failed in another way says so in
// parentheses), then the totals alone on the last line:
//
//	1204 passed, 0 failed, 3 skipped
//
// A run of a package that failed with no failed test (a build failure, a panic in TestMain, a
// data race found after its tests, output cut off before its result) counts as one failure
// there. The input may hold several go test runs one after the other (CI's test suite, chaos
// pass and fuzzing): the runs of one package add up on its line.
//
// It exits 1 when any test or package failed or when the input held no package at all, else
// 0. Lines that are not JSON events are copied through unchanged. It does not see go test's
// own exit status: run it under `set -o pipefail`.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

// event is one test2json event (go doc test2json), with the build events of go test -json.
type event struct {
	Action      string // start, run, pause, cont, pass, fail, skip, output, bench, build-output, build-fail
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output, build-fail: the package being built
	FailedBuild string // fail of a package: the import path whose build failed
}

// pkg is what is known of one package, over every go test run of it in the input.
type pkg struct {
	passed, failed, skipped int // tests; failed includes tests with no result
	outside                 int // runs of the package that failed with no failed test
	buildFailed             bool
	tested                  bool                // a run of the package had test files
	running                 map[string][]string // test → its output lines so far, until its result
	out                     []string            // this run's output outside any test
	runFailed               int                 // tests failed in this run
	ended                   bool                // this run has its result
}

// summary reads events and keeps the state of every package.
type summary struct {
	w     io.Writer
	pkgs  map[string]*pkg
	order []string // packages in the order they were first seen
}

// run summarizes the events read from in onto w and returns the exit code.
func run(in io.Reader, w io.Writer) int {
	s := &summary{w: w, pkgs: map[string]*pkg{}}
	r := bufio.NewReader(in)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			s.line(line)
		}
		if err != nil {
			if err != io.EOF {
				fmt.Fprintf(w, "testsummary: reading the events: %v\n", err)
				return 1
			}
			break
		}
	}
	return s.finish()
}

// line handles one input line: a JSON event, or anything else, copied through.
func (s *summary) line(b []byte) {
	var e event
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &e) != nil || e.Action == "" {
		s.write(string(b))
		return
	}
	switch e.Action {
	case "build-output":
		s.write(e.Output)
		return
	case "build-fail":
		return // the package's own fail event follows, with FailedBuild
	}
	if e.Package == "" {
		return
	}
	p := s.pkg(e.Package)
	if e.Test != "" {
		s.test(p, e)
		return
	}
	switch e.Action {
	case "start":
		p.ended = false
	case "output":
		p.out = append(p.out, e.Output)
	case "pass", "skip":
		for _, l := range p.out {
			if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "?") {
				s.write(l)
			}
		}
		p.tested = p.tested || !p.noTestFiles()
		p.endRun()
	case "fail":
		p.buildFailed = p.buildFailed || e.FailedBuild != ""
		s.writeUnfinished(p)
		for _, l := range p.out {
			if !isFrame(l) && l != "PASS\n" {
				s.write(l)
			}
		}
		if p.runFailed == 0 {
			p.outside++
		}
		p.tested = true
		p.endRun()
	}
}

// noTestFiles reports whether this run of p said "[no test files]".
func (p *pkg) noTestFiles() bool {
	for _, l := range p.out {
		if strings.HasPrefix(l, "?") && strings.Contains(l, "[no test files]") {
			return true
		}
	}
	return false
}

// endRun closes this run of the package.
func (p *pkg) endRun() {
	p.ended = true
	p.out = nil
	p.runFailed = 0
}

// test handles an event of one test of p.
func (s *summary) test(p *pkg, e event) {
	switch e.Action {
	case "run":
		p.running[e.Test] = nil
	case "output":
		if out, ok := p.running[e.Test]; ok {
			p.running[e.Test] = append(out, e.Output)
		} else {
			// Output attributed to a test that has ended (a goroutine it left behind):
			// the package's, so that it cannot stand for a test that never ended.
			p.out = append(p.out, e.Output)
		}
	case "pass":
		p.passed++
		delete(p.running, e.Test)
	case "skip":
		p.skipped++
		s.writeTest(p.running[e.Test])
		delete(p.running, e.Test)
	case "fail":
		p.failed++
		p.runFailed++
		s.writeTest(p.running[e.Test])
		delete(p.running, e.Test)
	}
}

// pkg returns the state of the package named name, new if it was not seen before.
func (s *summary) pkg(name string) *pkg {
	p, ok := s.pkgs[name]
	if !ok {
		p = &pkg{running: map[string][]string{}}
		s.pkgs[name] = p
		s.order = append(s.order, name)
	}
	return p
}

// writeUnfinished writes the output of p's tests that had no result and counts them failed.
func (s *summary) writeUnfinished(p *pkg) {
	tests := slices.Sorted(maps.Keys(p.running))
	for _, test := range tests {
		p.failed++
		p.runFailed++
		fmt.Fprintf(s.w, "--- FAIL: %s (no result: the test binary ended while it ran)\n", test)
		s.writeTest(p.running[test])
		delete(p.running, test)
	}
}

// writeTest writes a test's output, without the === RUN/PAUSE/CONT/NAME frame lines.
func (s *summary) writeTest(out []string) {
	for _, l := range out {
		if !isFrame(l) {
			s.write(l)
		}
	}
}

// isFrame reports whether l is one of go test -v's === lines, which say nothing here.
func isFrame(l string) bool {
	for _, f := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(l, f) {
			return true
		}
	}
	return false
}

func (s *summary) write(l string) {
	io.WriteString(s.w, l)
	if !strings.HasSuffix(l, "\n") {
		io.WriteString(s.w, "\n")
	}
}

// finish writes the summary lines and returns the exit code.
func (s *summary) finish() int {
	var passed, failed, skipped int
	for _, name := range s.order {
		p := s.pkgs[name]
		var notes []string
		if !p.ended {
			s.writeUnfinished(p)
			for _, l := range p.out {
				if !isFrame(l) {
					s.write(l)
				}
			}
			if p.runFailed == 0 {
				p.outside++
			}
			notes = append(notes, "no result: the output ended before the package's")
		}
		switch {
		case p.buildFailed:
			notes = append(notes, "build failed")
		case p.outside > 0 && p.ended:
			notes = append(notes, "failed outside any test: see its output above")
		case !p.tested && p.passed+p.failed+p.skipped == 0:
			notes = append(notes, "no test files")
		}
		note := ""
		if len(notes) > 0 {
			note = " (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintf(s.w, "%s: %d run, %d skipped, %d failed%s\n", name, p.passed+p.failed, p.skipped, p.failed, note)
		passed += p.passed
		failed += p.failed + p.outside
		skipped += p.skipped
	}
	fmt.Fprintf(s.w, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	switch {
	case len(s.order) == 0:
		fmt.Fprintln(s.w, "testsummary: no package in the input (was it `go test -json` output?)")
		return 1
	case failed > 0:
		return 1
	}
	return 0
}
