//go:build linux

package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// nodeScript is what every exec node of the suite runs (/bin/sh SCRIPT). It appends
//
//	<idempotency key> <attempt> <pid> <ppid> <node> <event> <unix ms>
//
// to $LEDGER — one printf into a file opened O_APPEND, so one write(2) per line and lines
// never interleave — where event is start, then finish (exit 0) or fail (an injected exit 1);
// a run that is killed or hangs has a start only. $JETFLOW_WORKER_PID is the worker that ran
// the step (its $PPID is the exec node's guarding shell).
// The environment (with.env of the node) chooses the behaviour:
//
//	POISON=1      kill the worker (SIGKILL to $JETFLOW_WORKER_PID)
//	HANG_FIRST=1  on attempt 1, ignore SIGTERM and sleep 600 s (the node's timeout ends it)
//	FAIL_FIRST=1  fail attempt 1
//	FAIL_PCT=N    fail N % of the attempts below FAIL_BELOW (default: every attempt)
//	SLEEP=S       sleep S seconds before finishing
//	EFFECT=1      sleep S seconds in a child process (a subshell), which then appends an
//	              "effect" line: a handler's side effect done by a child of the shell
//
// The output, {"key", "attempt", "pid"}, names the handler run whose result was recorded.
const nodeScript = `# jetflow chaos suite exec node
led() {
	printf '%s %s %s %s %s %s %s\n' "$JETFLOW_IDEMPOTENCY_KEY" "$JETFLOW_ATTEMPT" "$$" "$JETFLOW_WORKER_PID" "$JETFLOW_NODE" "$1" "$(date +%s%3N)" >>"$LEDGER"
}
led start
if [ -n "$POISON" ]; then
	kill -9 "$JETFLOW_WORKER_PID"
	sleep 5
	exit 1
fi
if [ -n "$HANG_FIRST" ] && [ "$JETFLOW_ATTEMPT" = 1 ]; then
	trap '' TERM INT
	sleep 600
fi
if [ -n "$FAIL_FIRST" ] && [ "$JETFLOW_ATTEMPT" = 1 ]; then
	led fail
	echo "injected failure (first attempt)" >&2
	exit 1
fi
if [ "${FAIL_PCT:-0}" -gt 0 ] && [ "$JETFLOW_ATTEMPT" -lt "${FAIL_BELOW:-1000}" ]; then
	r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
	if [ $((r % 100)) -lt "$FAIL_PCT" ]; then
		led fail
		echo "injected failure (${FAIL_PCT}%)" >&2
		exit 1
	fi
fi
if [ -n "$EFFECT" ]; then
	(sleep "${SLEEP:-1}"; led effect)
elif [ -n "$SLEEP" ]; then
	sleep "$SLEEP"
fi
led finish
printf '{"key":"%s","attempt":%s,"pid":%s}\n' "$JETFLOW_IDEMPOTENCY_KEY" "$JETFLOW_ATTEMPT" "$$"
`

// Ledger events.
const (
	evStart  = "start"
	evFinish = "finish"
	evFail   = "fail"
	evEffect = "effect" // EFFECT=1: the side effect, done by the shell's child
)

// event is one ledger line.
type event struct {
	key       string
	attempt   int
	pid, ppid int
	node, ev  string
	at        time.Time
}

// readLedger parses the ledger; bad counts lines that do not parse (a torn write would).
func readLedger(path string) (evs []event, bad int) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0
	} else if err != nil {
		return nil, 1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 7 {
			bad++
			continue
		}
		attempt, e1 := strconv.Atoi(fs[1])
		pid, e2 := strconv.Atoi(fs[2])
		ppid, e3 := strconv.Atoi(fs[3])
		ms, e4 := strconv.ParseInt(fs[6], 10, 64)
		if e1 != nil || e2 != nil || e3 != nil || e4 != nil || (fs[5] != evStart && fs[5] != evFinish && fs[5] != evFail && fs[5] != evEffect) {
			bad++
			continue
		}
		evs = append(evs, event{key: fs[0], attempt: attempt, pid: pid, ppid: ppid, node: fs[4], ev: fs[5], at: time.UnixMilli(ms)})
	}
	return evs, bad
}

// node is one node of a test workflow: an exec node running nodeScript, or a node of the
// hang worker's type.
type node struct {
	name       string
	typ        string // default exec
	shell      bool   // command as a shell line ("/bin/sh SCRIPT"), not a list of arguments
	needs      []string
	env        map[string]string // the script's behaviour (see nodeScript)
	retry      string            // YAML flow mapping, e.g. "{max_attempts: 10, initial: 100ms}"
	timeout    string
	maxCrashes int
	forEach    string // the node's for_each expression, e.g. "${{ input.items }}"
	maxPar     int    // its max_parallel
}

// applyWorkflow writes a workflow of exec nodes and applies it with `jetflow workflows apply`.
func (r *rig) applyWorkflow(name string, nodes ...node) {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nnodes:\n", name)
	for _, n := range nodes {
		typ := n.typ
		if typ == "" {
			typ = "exec"
		}
		fmt.Fprintf(&b, "  - name: %s\n    type: %s\n", n.name, typ)
		if len(n.needs) > 0 {
			fmt.Fprintf(&b, "    needs: [%s]\n", strings.Join(n.needs, ", "))
		}
		if n.timeout != "" {
			fmt.Fprintf(&b, "    timeout: %s\n", n.timeout)
		}
		if n.retry != "" {
			fmt.Fprintf(&b, "    retry: %s\n", n.retry)
		}
		if n.maxCrashes > 0 {
			fmt.Fprintf(&b, "    max_crashes: %d\n", n.maxCrashes)
		}
		if n.forEach != "" {
			fmt.Fprintf(&b, "    for_each: %q\n", n.forEach)
		}
		if n.maxPar > 0 {
			fmt.Fprintf(&b, "    max_parallel: %d\n", n.maxPar)
		}
		if typ != "exec" {
			r.hangNodes[n.name] = true
			continue
		}
		command := fmt.Sprintf("[/bin/sh, %q]", r.script)
		if n.shell {
			command = fmt.Sprintf("%q", "/bin/sh "+r.script)
		}
		fmt.Fprintf(&b, "    with:\n      command: %s\n      env:\n        LEDGER: %q\n", command, r.ledger)
		for k, v := range n.env {
			fmt.Fprintf(&b, "        %s: %q\n", k, v)
		}
		if n.env["HANG_FIRST"] != "" {
			r.hangNodes[n.name] = true
		}
	}
	path := filepath.Join(r.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.retryCLI(60*time.Second, "workflows", "apply", path)
}
