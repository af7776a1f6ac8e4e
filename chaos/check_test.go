//go:build linux

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/workflow"
)

// runView is what `jetflow runs get --json` prints.
type runView struct {
	ID     string               `json:"id"`
	Status string               `json:"status"`
	Reason string               `json:"reason"`
	Nodes  map[string]*nodeView `json:"nodes"`
}

type nodeView struct {
	Status   string          `json:"status"`
	Attempts int             `json:"attempts"`
	Output   json.RawMessage `json:"output"`
	Error    string          `json:"error"`
}

// dlqEntry is one entry of `jetflow dlq ls --json`.
type dlqEntry struct {
	ID     uint64 `json:"id"`
	Node   string `json:"node"`
	RunID  string `json:"run_id"`
	Reason string `json:"reason"`
}

// output is what nodeScript prints: the handler run whose result was recorded.
type output struct {
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
	PID     int    `json:"pid"`
}

// report is a scenario's outcome in Jepsen's vocabulary. Runs: ok (ended as the scenario
// asked), lost (never ended, or failed without its DLQ entry), duplicated (a node result
// recorded more than once, or two DLQ entries for one step), unexplained (any other
// outcome). Handler re-runs (a second start of the same attempt of a node, from the ledger):
// explained by a fault of the scenario, duplicated (after a clean finish or after the
// result was recorded, with no fault to explain it), or unexplained.
type report struct {
	Scenario string         `json:"scenario"`
	Seconds  float64        `json:"seconds"`
	Runs     int            `json:"runs"`
	OK       int            `json:"ok"`
	Lost     int            `json:"lost"`
	Dup      int            `json:"duplicated"`
	Unexpl   int            `json:"unexplained"`
	Faults   map[string]int `json:"faults"`
	DLQ      int            `json:"dlq_entries"`
	// Exits is workers that died without the test's hand or a poison step's.
	Exits int `json:"worker_exits"`

	HandlerRuns int            `json:"handler_runs"`
	Failures    int            `json:"injected_failures"`
	Timeouts    int            `json:"handler_timeouts"`
	Reruns      int            `json:"reruns"`
	Causes      map[string]int `json:"rerun_causes"`
	AfterResult int            `json:"explained_reruns_after_result"`
	DupReruns   int            `json:"duplicated_reruns"`
	UnexReruns  int            `json:"unexplained_reruns"`

	// Crashes is the sum of the node states' crash counts: what jetflow_step_reruns_total
	// counts (the worker increments both at the same place).
	Crashes int `json:"crashes_counted"`
	// Uncounted is re-runs after a crash, a server fault or an ignored timeout that no crash
	// count records.
	Uncounted int `json:"reruns_not_counted"`
	// Held is crash counts with no handler re-run behind them, while a worker or server fault
	// hit during the step's life: a worker that died holding the step (marked running) before
	// its handler started leaves no ledger line.
	Held int `json:"crashes_before_handler"`
	// Phantom is crash counts with no crash, server fault or ignored timeout behind them.
	Phantom int `json:"crashes_without_crash"`

	StepsLeft  int    `json:"steps_left"`
	SchedLeft  int    `json:"schedules_left"`
	Pending    uint64 `json:"consumer_pending"`
	AckPending uint64 `json:"consumer_ack_pending"`
	Torn       int    `json:"torn_ledger_lines"`

	Interrupted int     `json:"interrupted_steps"`
	RecoverP50  float64 `json:"recovery_p50_s"`
	RecoverMax  float64 `json:"recovery_max_s"`

	Problems []string `json:"problems,omitempty"`
}

func (rep *report) problem(format string, args ...any) {
	rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
}

// String is the report as printed after each scenario.
func (rep *report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %d runs in %.0fs — ok %d, lost %d, duplicated %d, unexplained %d\n",
		rep.Scenario, rep.Runs, rep.Seconds, rep.OK, rep.Lost, rep.Dup, rep.Unexpl)
	fmt.Fprintf(&b, "  faults: %s; DLQ entries: %d; workers that exited on their own: %d\n", counts(rep.Faults), rep.DLQ, rep.Exits)
	fmt.Fprintf(&b, "  handler runs %d (injected failures %d, timeouts %d); re-runs %d: explained %d (%s; %d of them after the result was recorded), duplicated %d, unexplained %d\n",
		rep.HandlerRuns, rep.Failures, rep.Timeouts, rep.Reruns, sum(rep.Causes), counts(rep.Causes), rep.AfterResult, rep.DupReruns, rep.UnexReruns)
	fmt.Fprintf(&b, "  crashes counted in node states (= jetflow_step_reruns_total): %d (%d of a step a worker held, stopped or dead, before its handler started); re-runs not counted: %d; crash counts with no crash: %d\n",
		rep.Crashes, rep.Held, rep.Uncounted, rep.Phantom)
	fmt.Fprintf(&b, "  left in the steps stream: %d steps, %d schedules; consumers: %d pending, %d ack-pending; torn ledger lines: %d\n",
		rep.StepsLeft, rep.SchedLeft, rep.Pending, rep.AckPending, rep.Torn)
	if rep.Interrupted > 0 {
		fmt.Fprintf(&b, "  recovery: %d steps interrupted by a fault, recorded again after p50 %.1fs, max %.1fs\n", rep.Interrupted, rep.RecoverP50, rep.RecoverMax)
	}
	for i, p := range rep.Problems {
		if i == 40 {
			fmt.Fprintf(&b, "  … %d more problems\n", len(rep.Problems)-i)
			break
		}
		fmt.Fprintf(&b, "  ! %s\n", p)
	}
	return b.String()
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// failed reports whether the report breaks the promise: a run lost or ending other than
// asked, a result recorded twice, a re-run no fault explains, a crash counted with no crash,
// a step left behind, a worker that exited by itself. Re-runs no crash count records
// (Uncounted) are reported, not failed on: rare since first deliveries are counted, one was
// seen around a server kill (RELIABILITY.md, finding 4).
func (rep *report) failed() bool {
	return rep.Lost+rep.Dup+rep.Unexpl+rep.DupReruns+rep.UnexReruns+rep.Phantom+rep.StepsLeft+rep.Torn+rep.Exits > 0 ||
		rep.Pending+rep.AckPending > 0
}

// checkOptions tune the check.
type checkOptions struct {
	endWithin time.Duration // how long runs may take to end after the faults stopped
}

// check waits for every started run to end, then checks the invariants against the broker
// (runs get --json, dlq ls --json, the runs bucket's key history, the steps stream and its
// consumers) and the ledger, and reports. It fails the test when the promise is broken.
func (r *rig) check(o checkOptions) *report {
	r.t.Helper()
	if r.stopKeep != nil {
		defer r.stopKeep() // workers are kept alive until the end has been seen
	}
	r.mu.Lock()
	runs := slices.Clone(r.runs)
	r.mu.Unlock()
	rep := &report{Scenario: r.name, Runs: len(runs), Faults: map[string]int{}, Causes: map[string]int{}}
	ctx, cancel := context.WithTimeout(r.ctx, o.endWithin+2*time.Minute)
	defer cancel()

	// 1. Every run ends (bounded).
	pending := map[string]bool{}
	for _, run := range runs {
		pending[run.id] = true
	}
	deadline := time.Now().Add(o.endWithin)
	for len(pending) > 0 && time.Now().Before(deadline) {
		for id := range pending {
			if _, err := r.kv.Get(ctx, workflow.EndKey(id)); err == nil {
				delete(pending, id)
			}
		}
		if len(pending) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	// 2. Nothing is left in the steps stream (bounded: late duplicates drain).
	r.waitDrained(ctx, rep, 30*time.Second)
	rep.Seconds = time.Since(r.began).Seconds()
	faults := r.faultLog()
	for _, f := range faults {
		rep.Faults[f.kind]++
		if f.kind == faultWorkerDied && !r.poison {
			rep.Exits++
			rep.problem("%s", f.note)
		}
	}

	// 3. The DLQ.
	var entries []dlqEntry
	out, errOut, code := r.cli(60*time.Second, "dlq", "ls", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &entries) != nil {
		rep.problem("dlq ls --json: exit %d: %s%s", code, out, errOut)
	}
	rep.DLQ = len(entries)
	dlqBy := map[string][]dlqEntry{}
	for _, e := range entries {
		dlqBy[workflow.IdempotencyKey(e.RunID, e.Node)] = append(dlqBy[workflow.IdempotencyKey(e.RunID, e.Node)], e)
	}
	expectedDead := map[string]bool{}
	for _, run := range runs {
		if run.deadNode != "" {
			expectedDead[workflow.IdempotencyKey(run.id, run.deadNode)] = true
		}
	}
	for key, es := range dlqBy {
		if len(es) > 1 {
			rep.Dup++
			rep.problem("step %s has %d DLQ entries", key, len(es))
		}
		if !expectedDead[key] {
			rep.Unexpl++
			rep.problem("step %s is in the DLQ (%s), which the scenario did not ask for", key, es[0].Reason)
		}
	}

	// 4. The ledger.
	evs, torn := readLedger(r.ledger)
	rep.Torn = torn
	byKey := map[string][]event{}
	finishedPID := map[int]bool{}
	for _, e := range evs {
		byKey[e.key] = append(byKey[e.key], e)
		switch e.ev {
		case evStart:
			rep.HandlerRuns++
		case evFinish:
			finishedPID[e.pid] = true
		case evFail:
			rep.Failures++
			finishedPID[e.pid] = true
		}
	}

	// 5. Each run: its end, its nodes (runs get --json), each node's state history.
	finals := map[string]*checkpoint.Node{} // by idempotency key
	finalAt := map[string]time.Time{}
	firstAt := map[string]time.Time{}
	doneAt := map[string]time.Time{}
	for _, run := range runs {
		v, err := r.runsGet(run.id)
		if err != nil {
			rep.Lost++
			rep.problem("run %s: %v", run.id, err)
			continue
		}
		ok := true
		for name, n := range v.Nodes {
			key := workflow.IdempotencyKey(run.id, name)
			nh, err := r.history(ctx, run.id, name)
			if err != nil {
				rep.problem("history of %s: %v", key, err)
				ok = false
				continue
			}
			finals[key], finalAt[key], firstAt[key], doneAt[key] = nh.final, nh.finalAt, nh.firstAt, nh.firstDone
			if nh.nDone > 1 {
				rep.Dup++
				ok = false
				rep.problem("node %s: its state became done %d times", key, nh.nDone)
			}
			if n.Status == checkpoint.StatusDone {
				var o output
				switch {
				case json.Unmarshal(n.Output, &o) != nil || o.Key != key:
					ok = false
					rep.Unexpl++
					rep.problem("node %s: recorded output %s is not this node's", key, n.Output)
				case !finishedPID[o.PID]:
					ok = false
					rep.Unexpl++
					rep.problem("node %s: recorded output of handler pid %d, which never finished", key, o.PID)
				case o.Attempt != n.Attempts:
					ok = false
					rep.Unexpl++
					rep.problem("node %s: recorded attempts %d, but the result came from attempt %d", key, n.Attempts, o.Attempt)
				}
			}
		}
		switch {
		case v.Status == checkpoint.RunRunning:
			rep.Lost++
			rep.problem("run %s never ended (after %s): %s", run.id, o.endWithin, nodeSummary(v))
		case run.deadNode == "" && v.Status != checkpoint.EndCompleted:
			rep.Unexpl++
			rep.problem("run %s ended %s (%s), want completed", run.id, v.Status, v.Reason)
		case run.deadNode == "" && !allDone(v):
			rep.Unexpl++
			rep.problem("run %s completed with nodes not done: %s", run.id, nodeSummary(v))
		case run.deadNode != "" && v.Status != checkpoint.EndFailed:
			rep.Unexpl++
			rep.problem("run %s ended %s, want failed with %s in the DLQ", run.id, v.Status, run.deadNode)
		case run.deadNode != "" && (v.Nodes[run.deadNode] == nil || v.Nodes[run.deadNode].Status != checkpoint.StatusDead):
			rep.Unexpl++
			rep.problem("run %s failed, but node %s is not dead: %s", run.id, run.deadNode, nodeSummary(v))
		case run.deadNode != "" && len(dlqBy[workflow.IdempotencyKey(run.id, run.deadNode)]) == 0:
			rep.Lost++
			rep.problem("run %s failed without its DLQ entry", run.id)
		case ok:
			rep.OK++
		}
	}

	// 6. Handler re-runs, explained or not, and the crash counts.
	crashReruns := map[string]int{}
	for key, kevs := range byKey {
		last := map[int]event{} // the latest start of each attempt
		for _, s := range kevs {
			if s.ev != evStart {
				continue
			}
			p, again := last[s.attempt]
			last[s.attempt] = s
			if !again {
				continue
			}
			rep.Reruns++
			after := !doneAt[key].IsZero() && s.at.After(doneAt[key].Add(tol))
			cause := r.explain(p, s, faults)
			switch {
			case cause != "":
				rep.Causes[cause]++
				if after {
					rep.AfterResult++
					r.t.Logf("re-run after the result was recorded (%s): node %s attempt %d: first run pid %d on worker %d at %s, re-run pid %d on worker %d at %s; first done at %s; states: %s",
						cause, key, s.attempt, p.pid, p.ppid, p.at.Format("15:04:05.000"), s.pid, s.ppid, s.at.Format("15:04:05.000"),
						doneAt[key].Format("15:04:05.000"), r.historyString(ctx, key))
				}
				if cause != faultDuplicate {
					crashReruns[key]++ // a re-run the promise says is counted
				}
			case after || finishedPID[p.pid]:
				rep.DupReruns++
				rep.problem("node %s re-ran attempt %d (pid %d on worker %d) after a clean finish or its recorded result, with no fault to explain it", key, s.attempt, s.pid, s.ppid)
			default:
				rep.UnexReruns++
				rep.problem("node %s re-ran attempt %d (pid %d on worker %d after pid %d on worker %d) with no fault to explain it", key, s.attempt, s.pid, s.ppid, p.pid, p.ppid)
			}
		}
		// A run of a node made to hang that had not finished when the result was recorded
		// was cut off by its timeout (exec) or abandoned by the worker (Go handler).
		for _, e := range kevs {
			if e.ev != evStart || !r.hangNodes[e.node] {
				continue
			}
			finished := false
			for _, f := range kevs {
				if f.pid == e.pid && f.ev != evStart && (doneAt[key].IsZero() || !f.at.After(doneAt[key])) {
					finished = true
				}
			}
			if !finished {
				rep.Timeouts++
			}
		}
	}
	for key, st := range finals {
		if st == nil {
			continue
		}
		rep.Crashes += st.Crashes
		switch c := crashReruns[key]; {
		case st.Crashes > c && r.faultWhile(faults, byKey[key], firstAt[key], finalAt[key]):
			rep.Held += st.Crashes - c
		case st.Crashes > c:
			rep.Phantom += st.Crashes - c
			rep.problem("node %s: %d crashes counted, but only %d re-runs after a crash, a server fault or an ignored timeout, and no fault while it was held; states: %s", key, st.Crashes, c, r.historyString(ctx, key))
		case c > st.Crashes:
			rep.Uncounted += c - st.Crashes
		}
	}

	// 7. Time to recover: from each fault to the result of each step it interrupted.
	var rec []time.Duration
	for _, f := range faults {
		if !f.isWorker() && !f.isServer() {
			continue
		}
		for key, kevs := range byKey {
			open := map[int]event{}
			for _, e := range kevs {
				if e.at.After(f.at) {
					break
				}
				if e.ev == evStart {
					open[e.pid] = e
				} else {
					delete(open, e.pid)
				}
			}
			for _, e := range open {
				if f.isWorker() && e.ppid != f.pid {
					continue
				}
				if at := finalAt[key]; finals[key].Final() && at.After(f.at) {
					rec = append(rec, at.Sub(f.at))
				}
				break
			}
		}
	}
	if len(rec) > 0 {
		sort.Slice(rec, func(i, j int) bool { return rec[i] < rec[j] })
		rep.Interrupted = len(rec)
		rep.RecoverP50 = rec[len(rec)/2].Seconds()
		rep.RecoverMax = rec[len(rec)-1].Seconds()
	}

	r.t.Log("\n" + rep.String())
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			b, _ := json.Marshal(rep)
			_, _ = f.Write(append(b, '\n'))
			f.Close()
		}
	}
	if rep.failed() {
		r.t.Errorf("scenario %s broke the promise (see the report above)", r.name)
	}
	return rep
}

const causeIgnoredTimeout = "handler ignored its timeout"

// faultWhile reports whether a worker or server fault hit while the step could be held: from
// an ack wait before its first handler run or its state's first write (a step lost with its
// worker before any handler ran is first written when it is counted, an ack wait later) to
// its end.
func (r *rig) faultWhile(faults []fault, kevs []event, first, end time.Time) bool {
	if len(kevs) == 0 {
		return false
	}
	from, to := kevs[0].at, end
	if !first.IsZero() && first.Before(from) {
		from = first
	}
	from = from.Add(-ackWait)
	if to.IsZero() {
		to = time.Now()
	}
	for _, f := range faults {
		// A stopped worker or a server down holds what it was sent until it is back: the
		// fault lasts from its signal to its end.
		last := f.at
		if f.until.After(last) {
			last = f.until
		}
		if (f.isWorker() || f.isServer()) && !last.Before(from) && !f.at.After(to) {
			return true
		}
	}
	return false
}

// historyString summarises the revisions of a node's state, for a log line.
func (r *rig) historyString(ctx context.Context, key string) string {
	run, node, _ := strings.Cut(key, ".")
	hs, err := r.kv.History(ctx, workflow.NodeKey(run, node))
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, h := range hs {
		var st checkpoint.Node
		_ = json.Unmarshal(h.Value(), &st)
		parts = append(parts, fmt.Sprintf("%s(delivery %d, attempts %d, crashes %d, worker %s, at %s)",
			st.Status, st.Delivery, st.Attempts, st.Crashes, st.Worker, h.Created().Format("15:04:05.000")))
	}
	return strings.Join(parts, " → ")
}

// explain returns the fault that explains re-run s of the attempt p ran before, or "".
// A worker fault explains it when it hit the worker of either run while p could still have
// been in flight (the zombie of a SIGSTOP may wake up and run a stale delivery); a server
// fault, when the broker was down between the two runs; a duplicate publish of the step,
// always; a node made to hang, when p never ended.
func (r *rig) explain(p, s event, faults []fault) string {
	from, to := p.at.Add(-ackWait), s.at.Add(tol)
	for _, f := range faults {
		end := f.until
		if end.IsZero() {
			end = f.at
		}
		overlaps := !f.at.After(to) && !end.Before(from)
		switch {
		case f.isWorker() && (f.pid == p.ppid || f.pid == s.ppid) && overlaps:
			return f.kind
		case f.isServer() && overlaps:
			return f.kind
		}
	}
	for _, f := range faults {
		if f.kind == faultDuplicate && f.key == s.key {
			return faultDuplicate
		}
	}
	if r.hangNodes[s.node] {
		return causeIgnoredTimeout
	}
	return ""
}

// runsGet runs `jetflow runs get ID --json`.
func (r *rig) runsGet(id string) (*runView, error) {
	var last error
	for range 3 {
		out, errOut, code := r.cli(30*time.Second, "runs", "get", id, "--json")
		var v runView
		if code == 0 && json.Unmarshal([]byte(out), &v) == nil {
			return &v, nil
		}
		last = fmt.Errorf("runs get --json: exit %d: %s", code, strings.TrimSpace(errOut))
		time.Sleep(500 * time.Millisecond)
	}
	return nil, last
}

// nodeHistory is what the revisions of a node's state say.
type nodeHistory struct {
	final     *checkpoint.Node // the last revision (nil: never tried)
	finalAt   time.Time        // when the broker stored it
	firstAt   time.Time        // when the broker stored the first revision
	firstDone time.Time        // when the broker stored the first done revision
	nDone     int              // how many times the state became done
}

// history reads every revision of a node's state. Times are the broker's: a worker's
// ended_at may be seconds older, since a write sent while the server is down lands when
// the client reconnects.
func (r *rig) history(ctx context.Context, run, node string) (nodeHistory, error) {
	var nh nodeHistory
	hs, err := r.kv.History(ctx, workflow.NodeKey(run, node))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nh, nil
	} else if err != nil {
		return nh, err
	}
	wasDone := false
	for _, h := range hs {
		if h.Operation() != jetstream.KeyValuePut {
			nh.final, wasDone = nil, false
			continue
		}
		var st checkpoint.Node
		if err := json.Unmarshal(h.Value(), &st); err != nil {
			return nh, err
		}
		nh.final, nh.finalAt = &st, h.Created()
		if nh.firstAt.IsZero() {
			nh.firstAt = h.Created()
		}
		isDone := st.Status == checkpoint.StatusDone
		if isDone && !wasDone {
			nh.nDone++
			if nh.firstDone.IsZero() {
				nh.firstDone = h.Created()
			}
		}
		wasDone = isDone
	}
	return nh, nil
}

// waitDrained waits (bounded) until no step is left in the steps stream and its consumers
// hold nothing pending, and records what is left.
func (r *rig) waitDrained(ctx context.Context, rep *report, within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		rep.StepsLeft, rep.SchedLeft, rep.Pending, rep.AckPending = 0, 0, 0, 0
		err := r.inspectSteps(ctx, rep)
		if err == nil && rep.StepsLeft == 0 && rep.Pending == 0 && rep.AckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				rep.problem("steps stream: %v", err)
			}
			if rep.StepsLeft+int(rep.Pending+rep.AckPending) > 0 {
				rep.problem("left in the steps stream after %s: %d steps, %d pending, %d ack-pending", within, rep.StepsLeft, rep.Pending, rep.AckPending)
			}
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (r *rig) inspectSteps(ctx context.Context, rep *report) error {
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := r.js.Stream(ictx, r.names.StepsStream())
	if err != nil {
		return err
	}
	info, err := s.Info(ictx, jetstream.WithSubjectFilter(r.prefix+".>"))
	if err != nil {
		return err
	}
	for subj, n := range info.State.Subjects {
		if strings.HasPrefix(subj, r.prefix+".sched.") {
			rep.SchedLeft += int(n)
		} else {
			rep.StepsLeft += int(n)
		}
	}
	cl := s.ListConsumers(ictx)
	for ci := range cl.Info() {
		rep.Pending += ci.NumPending
		rep.AckPending += uint64(ci.NumAckPending)
	}
	return cl.Err()
}

func allDone(v *runView) bool {
	for _, n := range v.Nodes {
		if n.Status != checkpoint.StatusDone {
			return false
		}
	}
	return len(v.Nodes) > 0
}

func nodeSummary(v *runView) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(v.Nodes)) {
		n := v.Nodes[name]
		parts = append(parts, fmt.Sprintf("%s=%s/%d", name, n.Status, n.Attempts))
	}
	return strings.Join(parts, " ")
}
