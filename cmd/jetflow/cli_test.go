package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestSetupTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // the first setup
	r := e.cli("setup")
	if r.code != 0 {
		t.Fatalf("second setup: %s", r)
	}
	if !strings.Contains(r.stdout, "up to date") || strings.Contains(r.stdout, "created") {
		t.Errorf("second setup should find everything in place:\n%s", r.stdout)
	}
	for _, want := range []string{"stream " + strings.ToUpper(e.prefix) + "_STEPS", "consumer " + e.prefix + "-exec"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("setup output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestSetupTuneType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if r := e.cli("setup", "--type", "exec", "--ack-wait", "2s", "--max-ack-pending", "7"); r.code != 0 {
		t.Fatalf("setup --type exec: %s", r)
	}
	_, js := e.srv.Connect(t)
	names := workflow.MustNames(e.prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, names.StepsStream(), names.Consumer("exec"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.AckWait != 2*time.Second || c.MaxAckPending != 7 {
		t.Errorf("consumer %s: AckWait %s, MaxAckPending %d; want 2s, 7", names.Consumer("exec"), c.AckWait, c.MaxAckPending)
	}
	// Tuning flags without --type are bad usage.
	if r := e.cli("setup", "--ack-wait", "2s"); r.code != exitUsage {
		t.Errorf("setup --ack-wait without --type: want exit 2, got %s", r)
	}
}

func TestWorkflowsValidateApplyLsGraph(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	examples := []string{"approval", "broken", "diamond", "digest", "flaky", "nap", "research", "shout", "triage", "wordcount"}

	r := e.cli("workflows", "validate", examplesDir)
	if r.code != 0 {
		t.Fatalf("validate: %s", r)
	}
	for _, name := range examples {
		if !strings.Contains(r.stdout, "workflow "+name+" is valid") {
			t.Errorf("validate output lacks %s:\n%s", name, r.stdout)
		}
	}
	if r := e.cli("workflows", "validate", examplesDir+"/diamond.yaml"); r.code != 0 || !strings.Contains(r.stdout, "workflow diamond is valid (4 nodes)") {
		t.Errorf("validate diamond.yaml: %s", r)
	}

	r = e.cli("workflows", "apply", examplesDir)
	if r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	for _, name := range examples {
		if !strings.Contains(r.stdout, "applied "+name+" ") {
			t.Errorf("apply output lacks %s:\n%s", name, r.stdout)
		}
	}
	r = e.cli("workflows", "apply", examplesDir)
	if r.code != 0 || strings.Contains(r.stdout, "applied") || !strings.Contains(r.stdout, "unchanged diamond") {
		t.Errorf("applying the same files again should change nothing: %s", r)
	}

	r = e.cli("workflows", "ls", "--json")
	if r.code != 0 {
		t.Fatalf("ls --json: %s", r)
	}
	var refs []struct {
		Name    string    `json:"name"`
		Hash    string    `json:"hash"`
		Updated time.Time `json:"updated"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &refs); err != nil {
		t.Fatalf("ls --json is not a JSON list: %v\n%s", err, r.stdout)
	}
	var got []string
	for _, ref := range refs {
		got = append(got, ref.Name)
		if ref.Hash == "" || ref.Updated.IsZero() {
			t.Errorf("workflow %s: empty hash or updated: %+v", ref.Name, ref)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, examples) {
		t.Errorf("ls --json names = %v, want %v", got, examples)
	}

	r = e.cli("workflows", "graph", "diamond")
	if r.code != 0 {
		t.Fatalf("graph: %s", r)
	}
	if !strings.HasPrefix(r.stdout, "flowchart TD\n") {
		t.Errorf("graph is not a Mermaid flowchart:\n%s", r.stdout)
	}
	for _, edge := range []string{"fetch --> words", "fetch --> shout", "words --> report", "shout --> report"} {
		if !strings.Contains(r.stdout, "  "+edge+"\n") {
			t.Errorf("graph lacks edge %q:\n%s", edge, r.stdout)
		}
	}
	if n := strings.Count(r.stdout, "-->"); n != 4 {
		t.Errorf("graph has %d edges, want 4:\n%s", n, r.stdout)
	}
}

func TestStartWaitCompleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	e.worker()

	r := e.cli("start", "diamond", "--input", `{"n":1}`, "--wait")
	if r.code != 0 {
		t.Fatalf("start --wait: %s", r)
	}
	out := lines(r.stdout)
	if len(out) != 2 || !workflow.ValidRunID(out[0]) || out[1] != "completed" {
		t.Fatalf("start --wait should print the run ID, then completed; got %q", out)
	}
	id := out[0]

	v := getRun(t, e, id)
	if v.Status != "completed" || v.ID != id || v.Workflow != "diamond" || v.EndedAt == nil {
		t.Errorf("runs get: %s", mustJSON(v))
	}
	for _, name := range []string{"fetch", "words", "shout", "report"} {
		n := v.Nodes[name]
		// attempts counts handler runs, the successful one included (consumer/process.go
		// records done with attempts = attempt; examples/flaky.yaml expects 3 after two
		// failures).
		if n == nil || n.Status != "done" || n.Attempts != 1 || len(n.Output) == 0 || n.StartedAt == nil || n.EndedAt == nil {
			t.Errorf("node %s: %s", name, mustJSON(n))
		}
	}
	// The run input reached the root, and the root's output the sink through both branches.
	var fetch struct {
		Run string `json:"run"`
		Got struct {
			Input struct{ N int } `json:"input"`
		} `json:"got"`
	}
	if err := json.Unmarshal(v.Nodes["fetch"].Output, &fetch); err != nil || fetch.Run != id || fetch.Got.Input.N != 1 {
		t.Errorf("fetch output %s: %+v, %v", v.Nodes["fetch"].Output, fetch, err)
	}
	var report struct {
		Report struct {
			Nodes map[string]json.RawMessage `json:"nodes"`
		} `json:"report"`
	}
	if err := json.Unmarshal(v.Nodes["report"].Output, &report); err != nil || len(report.Report.Nodes) != 2 {
		t.Errorf("report output %s should hold both parents: %v", v.Nodes["report"].Output, err)
	}

	// --json --wait prints the run view instead of the two lines.
	r = e.cli("start", "diamond", "--input", `{"n":2}`, "--wait", "--json")
	if r.code != 0 {
		t.Fatalf("start --wait --json: %s", r)
	}
	var jv runView
	if err := json.Unmarshal([]byte(r.stdout), &jv); err != nil || jv.Status != "completed" || jv.Workflow != "diamond" {
		t.Errorf("start --wait --json: %+v, %v\n%s", jv, err, r.stdout)
	}
}

func TestStartWaitFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	e.worker()

	r := e.cli("start", "broken", "--wait")
	if r.code != exitFailed {
		t.Fatalf("start broken --wait: want exit 1, got %s", r)
	}
	if r.msg() != "" {
		t.Errorf("a failed run is reported on stdout only; stderr would get %q", r.msg())
	}
	out := lines(r.stdout)
	if len(out) != 2 || !workflow.ValidRunID(out[0]) || !strings.HasPrefix(out[1], "failed") {
		t.Fatalf("start --wait should print the run ID, then failed…; got %q", out)
	}
	id := out[0]

	r = e.cli("dlq", "ls", "--json")
	if r.code != 0 {
		t.Fatalf("dlq ls --json: %s", r)
	}
	var entries []struct {
		ID       uint64    `json:"id"`
		Workflow string    `json:"workflow"`
		Node     string    `json:"node"`
		RunID    string    `json:"run_id"`
		Reason   string    `json:"reason"`
		Attempts int       `json:"attempts"`
		Error    string    `json:"error"`
		FailedAt time.Time `json:"failed_at"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("dlq ls --json: %v\n%s", err, r.stdout)
	}
	if len(entries) != 1 {
		t.Fatalf("dlq ls --json: %d entries, want 1:\n%s", len(entries), r.stdout)
	}
	d := entries[0]
	if d.ID == 0 || d.Workflow != "broken" || d.Node != "authenticate" || d.RunID != id ||
		d.Reason != "permanent error" || d.Attempts != 1 || !strings.Contains(d.Error, "401 Unauthorized") || d.FailedAt.IsZero() {
		t.Errorf("dlq entry: %+v", d)
	}

	r = e.cli("runs", "get", id, "--json")
	if r.code != 0 {
		t.Fatalf("runs get --json: %s", r)
	}
	// The shape of DESIGN.md, key by key.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("runs get --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"id", "workflow", "status", "created_at", "ended_at", "reason", "nodes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("runs get --json lacks %q:\n%s", k, r.stdout)
		}
	}
	var nodes map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw["nodes"], &nodes); err != nil {
		t.Fatalf("nodes: %v", err)
	}
	for _, k := range []string{"status", "attempts", "error", "started_at", "ended_at"} {
		if _, ok := nodes["authenticate"][k]; !ok {
			t.Errorf("node authenticate lacks %q:\n%s", k, r.stdout)
		}
	}
	var v runView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatal(err)
	}
	if v.ID != id || v.Workflow != "broken" || v.Status != "failed" || v.EndedAt == nil || v.Reason == "" || v.CreatedAt.IsZero() {
		t.Errorf("run: %+v", v)
	}
	if a := v.Nodes["authenticate"]; a == nil || a.Status != "dead" || a.Attempts != 1 ||
		!strings.Contains(a.Error, "401 Unauthorized") || a.StartedAt == nil || a.EndedAt == nil {
		t.Errorf("node authenticate: %s", mustJSON(a))
	}
	if u := v.Nodes["use-token"]; u == nil || u.Status != "pending" {
		t.Errorf("node use-token (after a dead parent) should stay pending: %s", mustJSON(u))
	}
}

func TestStartSameID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	// No worker: the root step stays in the stream, where a second publish would show.

	for i := range 2 {
		r := e.cli("start", "diamond", "--id", "order-42", "--input", `{"n": 1}`)
		if r.code != 0 || r.stdout != "order-42\n" {
			t.Fatalf("start --id, time %d: want the ID back, got %s", i+1, r)
		}
	}
	// The same input, spelled differently, is the same input.
	if r := e.cli("start", "diamond", "--id", "order-42", "--input", `{ "n":1 }`); r.code != 0 || r.stdout != "order-42\n" {
		t.Fatalf("start --id with equivalent JSON: %s", r)
	}
	names := workflow.MustNames(e.prefix)
	_, js := e.srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	if msgs := s.CachedInfo().State.Msgs; msgs != 1 {
		t.Errorf("steps stream holds %d messages, want 1 (one start request of one run)", msgs)
	}
	// A worker records the run; from then on another input or workflow under the ID is refused.
	e.worker()
	natstest.Eventually(t, 30*time.Second, func() bool { return e.cli("runs", "get", "order-42").code == 0 }, "run order-42 was never recorded")

	r := e.cli("start", "diamond", "--id", "order-42", "--input", `{"n":2}`)
	if r.code != exitFailed {
		t.Errorf("start --id with another input: want exit 1, got %s", r)
	}
	if m := r.msg(); !strings.Contains(m, "order-42") || strings.Contains(r.err.Error(), "\n") {
		t.Errorf("error should name the run on one line: %q", m)
	}
	if r := e.cli("start", "flaky", "--id", "order-42", "--input", `{"n":1}`); r.code != exitFailed {
		t.Errorf("start --id with another workflow: want exit 1, got %s", r)
	}
	if v := getRun(t, e, "order-42"); v.Workflow != "diamond" {
		t.Errorf("the first run should be untouched: %+v", v)
	}
}

func TestStartWaitTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	// No worker runs nap's steps.
	r := e.cli("start", "nap", "--wait", "--timeout", "300ms")
	if r.code != exitTimeout {
		t.Fatalf("start --wait --timeout with no worker: want exit 124, got %s", r)
	}
	out := lines(r.stdout)
	if len(out) != 1 || !workflow.ValidRunID(out[0]) {
		t.Errorf("stdout should hold the run ID: %q", out)
	}
	if m := r.msg(); !strings.Contains(m, "still running") || strings.Contains(r.err.Error(), "\n") {
		t.Errorf("timeout message: %q", m)
	}
}

// runView mirrors the JSON of `runs get --json` (DESIGN.md, CLI contract).
type runView struct {
	ID        string               `json:"id"`
	Workflow  string               `json:"workflow"`
	Status    string               `json:"status"`
	CreatedAt time.Time            `json:"created_at"`
	EndedAt   *time.Time           `json:"ended_at"`
	Reason    string               `json:"reason"`
	Nodes     map[string]*nodeView `json:"nodes"`
}

type nodeView struct {
	Status    string          `json:"status"`
	Attempts  int             `json:"attempts"`
	Output    json.RawMessage `json:"output"`
	Error     string          `json:"error"`
	StartedAt *time.Time      `json:"started_at"`
	EndedAt   *time.Time      `json:"ended_at"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// getRun runs `runs get ID --json`.
func getRun(t testing.TB, e *testEnv, id string) *runView {
	t.Helper()
	r := e.cli("runs", "get", id, "--json")
	if r.code != 0 {
		t.Fatalf("runs get %s: %s", id, r)
	}
	var v runView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("runs get %s --json: %v\n%s", id, err, r.stdout)
	}
	return &v
}

// A node's concurrency: becomes its type's consumer MaxAckPending when the workflow is
// applied; a missing consumer is created with it; nothing else of the consumer changes.
func TestWorkflowConcurrencyCapsTheType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	def := filepath.Join(t.TempDir(), "capped.yaml")
	if err := os.WriteFile(def, []byte(`name: capped
nodes:
  - name: a
    type: exec
    concurrency: 3
    with: {command: "echo 1"}
  - name: b
    type: scarce
    needs: [a]
    concurrency: 2
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.cli("workflows", "apply", def)
	if r.code != 0 {
		t.Fatalf("workflows apply: %s", r)
	}
	for _, want := range []string{"consumer " + e.prefix + "-exec: concurrency 3 (was 1000)", "consumer " + e.prefix + "-scarce: created with concurrency 2"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("apply did not say %q:\n%s", want, r.stderr)
		}
	}
	_, js := e.srv.Connect(t)
	names := workflow.MustNames(e.prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for typ, want := range map[string]int{"exec": 3, "scarce": 2} {
		cons, err := js.Consumer(ctx, names.StepsStream(), names.Consumer(typ))
		if err != nil {
			t.Fatal(err)
		}
		if c := cons.CachedInfo().Config; c.MaxAckPending != want || c.AckWait != 30*time.Second {
			t.Errorf("consumer %s: MaxAckPending %d, AckWait %s; want %d, 30s", typ, c.MaxAckPending, c.AckWait, want)
		}
	}
	// Applying it again changes nothing, and says nothing.
	if r := e.cli("workflows", "apply", def); r.code != 0 || strings.Contains(r.stderr, "concurrency") {
		t.Errorf("second apply: %s", r)
	}
}
