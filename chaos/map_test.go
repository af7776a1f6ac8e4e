//go:build linux

package chaos

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/workflow"
)

// scenarioMap (11): one run of a for_each node over sz.runs items, max_parallel 50, each
// item an exec step that writes the ledger, while workers are killed every few seconds.
// Every item runs to done exactly once in its recorded result; an item's handler runs again
// only when a kill hit while it could be held, and each such re-run is counted. The node's
// output is the ordered list of the items' outputs.
func scenarioMap(t *testing.T, sz size) *report {
	r := newRig(t, "map", rigOptions{})
	r.applyWorkflow("map", node{name: "each", forEach: "${{ input.items }}", maxPar: 50})
	r.keepWorkers(sz.workers)
	items := make([]int, sz.runs)
	for i := range items {
		items[i] = i
	}
	in, _ := json.Marshal(map[string]any{"items": items})
	id := "map-000"
	if _, errOut, code := r.cli(60*time.Second, "start", "map", "--id", id, "--input", string(in)); code != 0 {
		t.Fatalf("start: exit %d: %s", code, errOut)
	}
	wait := every(3*time.Second, sz.faults, time.Now().Add(sz.within), func(int) {
		if w := r.victim(false); w != nil {
			r.killWorker(w)
		}
	})
	rep := &report{Scenario: r.name, Runs: 1, Faults: map[string]int{}, Causes: map[string]int{}}
	deadline := time.Now().Add(sz.within)
	var st struct {
		Status string `json:"status"`
		Nodes  map[string]struct {
			Status string          `json:"status"`
			Output json.RawMessage `json:"output"`
			Items  map[string]int  `json:"items"`
		} `json:"nodes"`
	}
	for time.Now().Before(deadline) {
		out, _, code := r.cli(60*time.Second, "runs", "get", id, "--json")
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Status != "running" {
			break
		}
		time.Sleep(time.Second)
	}
	wait()
	if r.stopKeep != nil {
		r.stopKeep()
	}
	rep.Seconds = time.Since(r.began).Seconds()
	faults := r.faultLog()
	for _, f := range faults {
		rep.Faults[f.kind]++
	}
	each := st.Nodes["each"]
	if st.Status != "completed" || each.Status != "done" {
		rep.problem("run ended %q, node each %q (items %v); want completed and done", st.Status, each.Status, each.Items)
	}
	var outs []json.RawMessage
	if err := json.Unmarshal(each.Output, &outs); err != nil || len(outs) != sz.runs {
		rep.problem("node output is not a list of %d: %v (%d)", sz.runs, err, len(outs))
	}
	// Each item's output is the ledger script's, which names the item's idempotency key.
	for i, o := range outs {
		if want := workflow.ItemIdempotencyKey(id, "each", i); !strings.Contains(string(o), want) {
			rep.problem("output[%d] = %.120s; want item %d's (key %s)", i, o, i, want)
			break
		}
	}
	evs, bad := readLedger(r.ledger)
	if bad > 0 {
		rep.problem("%d torn ledger lines", bad)
	}
	starts, finishes := map[string][]event{}, map[string]int{}
	for _, e := range evs {
		switch e.ev {
		case evStart:
			starts[e.key] = append(starts[e.key], e)
		case evFinish:
			finishes[e.key]++
		}
	}
	for i := range sz.runs {
		key := workflow.ItemIdempotencyKey(id, "each", i)
		kevs := starts[key]
		switch {
		case len(kevs) == 0:
			rep.Lost++
			rep.problem("item %d never ran", i)
		case finishes[key] == 0:
			rep.problem("item %d never finished its handler", i)
		case len(kevs) > 1:
			rep.Reruns += len(kevs) - 1
			if !r.faultWhile(faults, kevs, time.Time{}, kevs[len(kevs)-1].at) {
				rep.UnexReruns++
				rep.problem("item %d ran %d times with no kill while it could be held", i, len(kevs))
			}
		}
	}
	for key := range starts {
		if !strings.HasPrefix(key, id+".each.") {
			rep.problem("ledger key %s is no item of the run", key)
		}
	}
	t.Logf("map: %d items, %d re-runs (each after a kill), %d faults, %.0f s", sz.runs, rep.Reruns, len(faults), rep.Seconds)
	if rep.failed() {
		t.Errorf("scenario %s broke the promise:\n%s", r.name, rep)
	}
	return rep
}
