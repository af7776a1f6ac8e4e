package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canned reads testdata/name.jsonl: real `go test -json` output (testdata/README.md).
func canned(t *testing.T, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join("testdata", name+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// firstLines returns the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "")
}

// countLine returns how many of lines are want.
func countLine(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

// TestRun feeds canned `go test -json` output to the summarizer and checks what a reader of
// CI's log relies on: the exit code, the totals alone on the last line, one summary line per
// package, and the output of failed and skipped tests kept (without the === frame lines).
func TestRun(t *testing.T) {
	const p = "example.com/s/"
	for _, tc := range []struct {
		name  string
		input func(t *testing.T) string
		code  int
		last  string         // the totals line, which must be the last line
		lines []string       // whole lines that must be in the output
		not   []string       // substrings that must not be
		times map[string]int // whole lines that must be in the output exactly so many times
	}{{
		name:  "passing tests and a skipped subtest",
		input: func(t *testing.T) string { return canned(t, "pass") },
		code:  0,
		last:  "3 passed, 0 failed, 1 skipped",
		lines: []string{"ok  \t" + p + "pass\t0.026s", p + "pass: 3 run, 1 skipped, 0 failed",
			"    p_test.go:8: not here", "--- SKIP: TestB/two (0.00s)"},
		not: []string{"=== RUN", "--- PASS"},
	}, {
		name:  "failing tests keep their output; a failed subtest fails its parent",
		input: func(t *testing.T) string { return canned(t, "fail") },
		code:  1,
		last:  "2 passed, 3 failed, 0 skipped",
		lines: []string{"    f_test.go:7: about to fail", "    f_test.go:8: want 1, got 2", "--- FAIL: TestBad (0.00s)",
			"    f_test.go:12: sub broke", "--- FAIL: TestSub/bad (0.00s)", "--- FAIL: TestSub (0.00s)",
			"FAIL\t" + p + "fail\t0.038s", p + "fail: 5 run, 0 skipped, 3 failed"},
		not: []string{"f_test.go:5: fine", "=== RUN"},
	}, {
		name:  "a skipped test says why",
		input: func(t *testing.T) string { return canned(t, "skip") },
		code:  0,
		last:  "0 passed, 0 failed, 1 skipped",
		lines: []string{"    s_test.go:5: browser test skipped: no Chromium found", p + "skip: 0 run, 1 skipped, 0 failed"},
	}, {
		name:  "a build failure shows the compiler's output and counts as a failure",
		input: func(t *testing.T) string { return canned(t, "build") },
		code:  1,
		last:  "0 passed, 1 failed, 0 skipped",
		lines: []string{"build/b_test.go:5:28: undefined: undefinedThing", "FAIL\t" + p + "build [build failed]",
			p + "build: 0 run, 0 skipped, 0 failed (build failed)"},
	}, {
		name:  "a timeout fails the test that was running, with the panic",
		input: func(t *testing.T) string { return canned(t, "timeout") },
		code:  1,
		last:  "1 passed, 1 failed, 0 skipped",
		lines: []string{"--- FAIL: TestSlow (no result: the test binary ended while it ran)", "    t_test.go:9: waiting",
			"panic: test timed out after 2s", p + "timeout: 2 run, 0 skipped, 1 failed"},
	}, {
		name:  "a panicking test fails with its stack",
		input: func(t *testing.T) string { return canned(t, "panic") },
		code:  1,
		last:  "0 passed, 1 failed, 0 skipped",
		lines: []string{"--- FAIL: TestBoom (0.00s)", "panic: assignment to entry in nil map [recovered, repanicked]",
			p + "panic: 1 run, 0 skipped, 1 failed"},
	}, {
		name:  "a package without test files",
		input: func(t *testing.T) string { return canned(t, "notests") },
		code:  0,
		last:  "0 passed, 0 failed, 0 skipped",
		lines: []string{"?   \t" + p + "notests\t[no test files]", p + "notests: 0 run, 0 skipped, 0 failed (no test files)"},
	}, {
		name:  "several packages: one summary line each, totals over all, one failure fails the whole",
		input: func(t *testing.T) string { return canned(t, "pass", "skip", "notests", "panic") },
		code:  1,
		last:  "3 passed, 1 failed, 2 skipped",
		lines: []string{p + "pass: 3 run, 1 skipped, 0 failed", p + "skip: 0 run, 1 skipped, 0 failed",
			p + "notests: 0 run, 0 skipped, 0 failed (no test files)", p + "panic: 1 run, 0 skipped, 1 failed"},
	}, {
		name: "output cut off mid-test: the running test and its package fail",
		// fail.jsonl up to TestBad's second log line: TestOK passed, TestBad has no result.
		input: func(t *testing.T) string { return firstLines(canned(t, "fail"), 10) },
		code:  1,
		last:  "1 passed, 1 failed, 0 skipped",
		lines: []string{"--- FAIL: TestBad (no result: the test binary ended while it ran)", "    f_test.go:8: want 1, got 2",
			p + "fail: 2 run, 0 skipped, 1 failed (no result: the output ended before the package's)"},
	}, {
		name: "a package that fails outside any test (TestMain, a race after the tests) counts once",
		input: func(t *testing.T) string {
			return `{"Action":"start","Package":"x/m"}
{"Action":"run","Package":"x/m","Test":"TestA"}
{"Action":"output","Package":"x/m","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}
{"Action":"pass","Package":"x/m","Test":"TestA"}
{"Action":"output","Package":"x/m","Output":"goleak: found unexpected goroutines\n"}
{"Action":"output","Package":"x/m","Output":"FAIL\tx/m\t0.1s\n"}
{"Action":"fail","Package":"x/m"}
`
		},
		code: 1,
		last: "1 passed, 1 failed, 0 skipped",
		lines: []string{"goleak: found unexpected goroutines", "FAIL\tx/m\t0.1s",
			"x/m: 1 run, 0 skipped, 0 failed (failed outside any test: see its output above)"},
	}, {
		name: "output of a test that has ended is the package's, not a test with no result",
		input: func(t *testing.T) string {
			return `{"Action":"start","Package":"x/g"}
{"Action":"run","Package":"x/g","Test":"TestA"}
{"Action":"pass","Package":"x/g","Test":"TestA"}
{"Action":"output","Package":"x/g","Test":"TestA","Output":"left-behind goroutine prints\n"}
{"Action":"output","Package":"x/g","Output":"ok  \tx/g\t0.1s\n"}
{"Action":"pass","Package":"x/g"}
`
		},
		code:  0,
		last:  "1 passed, 0 failed, 0 skipped",
		lines: []string{"ok  \tx/g\t0.1s", "x/g: 1 run, 0 skipped, 0 failed"},
		not:   []string{"no result"},
	}, {
		name:  "two runs of a package (tests, then a fuzz target) add up on one line",
		input: func(t *testing.T) string { return canned(t, "pass", "pass") },
		code:  0,
		last:  "6 passed, 0 failed, 2 skipped",
		lines: []string{p + "pass: 6 run, 2 skipped, 0 failed"},
		times: map[string]int{"ok  \t" + p + "pass\t0.026s": 2, p + "pass: 6 run, 2 skipped, 0 failed": 1},
	}, {
		name: "a failed run of a package stays failed when a later run of it passes",
		input: func(t *testing.T) string {
			return `{"Action":"start","Package":"x/m"}
{"Action":"output","Package":"x/m","Output":"FAIL\tx/m [setup failed]\n"}
{"Action":"fail","Package":"x/m"}
{"Action":"start","Package":"x/m"}
{"Action":"run","Package":"x/m","Test":"FuzzA"}
{"Action":"pass","Package":"x/m","Test":"FuzzA"}
{"Action":"output","Package":"x/m","Output":"ok  \tx/m\t10.1s\n"}
{"Action":"pass","Package":"x/m"}
`
		},
		code:  1,
		last:  "1 passed, 1 failed, 0 skipped",
		lines: []string{"FAIL\tx/m [setup failed]", "ok  \tx/m\t10.1s", "x/m: 1 run, 0 skipped, 0 failed (failed outside any test: see its output above)"},
		times: map[string]int{"FAIL\tx/m [setup failed]": 1},
	}, {
		name: "lines that are not events are copied through",
		input: func(t *testing.T) string {
			return "go: downloading example.com/dep v1.0.0\n" + canned(t, "skip") + "not json {\n"
		},
		code:  0,
		last:  "0 passed, 0 failed, 1 skipped",
		lines: []string{"go: downloading example.com/dep v1.0.0", "not json {"},
	}, {
		name:  "no package at all is a failure",
		input: func(t *testing.T) string { return "go: unknown flag -rase\n" },
		code:  1,
		lines: []string{"go: unknown flag -rase", "0 passed, 0 failed, 0 skipped",
			"testsummary: no package in the input (was it `go test -json` output?)"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			code := run(strings.NewReader(tc.input(t)), &out)
			got := out.String()
			if code != tc.code {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tc.code, got)
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if tc.last != "" && lines[len(lines)-1] != tc.last {
				t.Errorf("last line %q, want %q; output:\n%s", lines[len(lines)-1], tc.last, got)
			}
			for _, want := range tc.lines {
				if countLine(lines, want) == 0 {
					t.Errorf("no line %q in the output:\n%s", want, got)
				}
			}
			for want, n := range tc.times {
				if got := countLine(lines, want); got != n {
					t.Errorf("line %q is in the output %d times, want %d:\n%s", want, got, n, out.String())
				}
			}
			for _, bad := range tc.not {
				if strings.Contains(got, bad) {
					t.Errorf("the output holds %q:\n%s", bad, got)
				}
			}
		})
	}
}

// The events of one package with a passing and a skipped test, as `go test -json` writes them.
func Example_summary() {
	events := `{"Action":"start","Package":"example.com/p"}
{"Action":"run","Package":"example.com/p","Test":"TestA"}
{"Action":"output","Package":"example.com/p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"example.com/p","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}
{"Action":"pass","Package":"example.com/p","Test":"TestA"}
{"Action":"run","Package":"example.com/p","Test":"TestB"}
{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"    p_test.go:9: no Chromium here\n"}
{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"example.com/p","Test":"TestB"}
{"Action":"output","Package":"example.com/p","Output":"PASS\n"}
{"Action":"output","Package":"example.com/p","Output":"ok  \texample.com/p\t0.02s\n"}
{"Action":"pass","Package":"example.com/p"}
`
	code := run(strings.NewReader(events), os.Stdout)
	fmt.Println("exit", code)
	// Output:
	//     p_test.go:9: no Chromium here
	// --- SKIP: TestB (0.00s)
	// ok  	example.com/p	0.02s
	// example.com/p: 1 run, 1 skipped, 0 failed
	// 1 passed, 0 failed, 1 skipped
	// exit 0
}
