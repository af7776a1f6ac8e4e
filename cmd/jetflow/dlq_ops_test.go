package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// opsConn is a library connection to an env: JetStream, the store and the names.
type opsConn struct {
	js    jetstream.JetStream
	store *checkpoint.Store
	names workflow.Names
}

func (e *testEnv) lib() *opsConn {
	e.t.Helper()
	_, js := e.srv.Connect(e.t)
	names := workflow.MustNames(e.prefix)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		e.t.Fatal(err)
	}
	return &opsConn{js: js, store: store, names: names}
}

// applyGo stores a workflow built in Go (with node types the CLI worker does not know).
func (c *opsConn) applyGo(t testing.TB, w *workflow.Workflow) {
	t.Helper()
	if err := w.Validate(workflow.ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.store.ApplyWorkflow(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}

// goWorker runs a library worker with Go handlers against the env until the test ends, or
// until stop is called.
func (e *testEnv) goWorker(reg func(w *consumer.Worker)) (stop func()) {
	e.t.Helper()
	nc, err := nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	names := workflow.MustNames(e.prefix)
	store, err := checkpoint.Open(context.Background(), js, names)
	if err != nil {
		e.t.Fatal(err)
	}
	w, err := consumer.New(js, store, consumer.Config{Names: names, PollWait: 200 * time.Millisecond, DrainTimeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	reg(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("worker: %v", err)
			}
			nc.Close()
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// jsonOut runs a command that must succeed and decodes its stdout into v.
func (e *testEnv) jsonOut(v any, args ...string) {
	e.t.Helper()
	r := e.cli(args...)
	if r.code != 0 {
		e.t.Fatalf("%s: %s", strings.Join(args, " "), r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		e.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

// compact returns JSON without insignificant space.
func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// dlqEntry mirrors `dlq ls --json` (DESIGN.md, CLI contract).
type dlqEntry struct {
	ID       uint64    `json:"id"`
	Workflow string    `json:"workflow"`
	Node     string    `json:"node"`
	RunID    string    `json:"run_id"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	FailedAt time.Time `json:"failed_at"`
}

// runsLs runs `runs ls --json` with extra flags.
func (e *testEnv) runsLs(extra ...string) []checkpoint.RunSummary {
	e.t.Helper()
	var runs []checkpoint.RunSummary
	e.jsonOut(&runs, append([]string{"runs", "ls", "--json"}, extra...)...)
	return runs
}

// chargeHandler fails charge permanently until fixed, or for a negative amount, and counts
// the runs of each node per run after the fix.
type chargeHandler struct {
	fixed atomic.Bool
	mu    sync.Mutex
	after map[string]int      // run.node → runs after the fix
	input map[string][]string // run.node → inputs received
}

func (h *chargeHandler) handle(ctx context.Context, s *consumer.Step) (any, error) {
	h.mu.Lock()
	if h.after == nil {
		h.after, h.input = map[string]int{}, map[string][]string{}
	}
	if h.fixed.Load() {
		h.after[s.IdempotencyKey]++
	}
	h.input[s.IdempotencyKey] = append(h.input[s.IdempotencyKey], string(s.Input))
	h.mu.Unlock()
	if s.Node != "charge" {
		return "notified", nil
	}
	var in struct {
		Input struct {
			Amount int `json:"amount"`
		} `json:"input"`
	}
	if err := s.Bind(&in); err != nil {
		return nil, err
	}
	if !h.fixed.Load() || in.Input.Amount < 0 {
		return nil, consumer.Permanent(fmt.Errorf("card declined\nthe issuer refused amount %d", in.Input.Amount))
	}
	return map[string]int{"charged": in.Input.Amount}, nil
}

func (h *chargeHandler) runsAfterFix(run, node string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.after[workflow.IdempotencyKey(run, node)]
}

// setupCharge applies workflow "pay" (charge → notify, Go type "card") and runs a worker.
func setupCharge(t *testing.T) (*testEnv, *opsConn, *chargeHandler) {
	t.Helper()
	e := newEnv(t)
	c := e.lib()
	wf := workflow.New("pay")
	wf.Node("charge", "card")
	wf.Node("notify", "card", "charge")
	c.applyGo(t, wf)
	h := &chargeHandler{}
	e.goWorker(func(w *consumer.Worker) { w.Handle("card", h.handle) })
	return e, c, h
}

func TestDLQReplayAllAfterFix(t *testing.T) {
	t.Parallel()
	e, _, h := setupCharge(t)
	var ids []string
	for i := range 10 {
		r := e.cli("start", "pay", "--input", fmt.Sprintf(`{"amount": %d}`, i+1))
		if r.code != 0 {
			t.Fatalf("start: %s", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		return len(e.runsLs("--status", "failed", "--workflow", "pay")) == 10
	}, "10 runs did not fail")

	var entries []dlqEntry
	e.jsonOut(&entries, "dlq", "ls", "--json")
	if len(entries) != 10 {
		t.Fatalf("dlq ls: %d entries, want 10", len(entries))
	}
	for _, d := range entries {
		if d.Workflow != "pay" || d.Node != "charge" || d.Reason != "permanent error" || d.Attempts != 1 ||
			!strings.Contains(d.Error, "card declined the issuer refused") || d.FailedAt.IsZero() {
			t.Errorf("entry: %+v", d)
		}
	}
	for _, d := range []string{"30d", "1d12h"} {
		var recent []dlqEntry
		if e.jsonOut(&recent, "dlq", "ls", "--json", "--since", d); len(recent) != 10 {
			t.Errorf("dlq ls --since %s: %d entries, want 10", d, len(recent))
		}
	}
	var groups []map[string]any
	e.jsonOut(&groups, "dlq", "ls", "--group", "--json")
	if want := `[{"count":10,"node":"charge","reason":"permanent error","workflow":"pay"}]`; mustJSON(groups) != want {
		t.Errorf("dlq ls --group --json = %s, want %s", mustJSON(groups), want)
	}
	r := e.cli("dlq", "ls", "--group")
	if out := lines(r.stdout); r.code != 0 || len(out) != 2 || !strings.HasPrefix(out[0], "COUNT") ||
		strings.Join(strings.Fields(out[1]), " ") != "10 pay charge permanent error" {
		t.Errorf("dlq ls --group: %s", r)
	}
	r = e.cli("dlq", "ls")
	if out := lines(r.stdout); r.code != 0 || len(out) != 11 || !strings.Contains(out[0], "AGE") {
		t.Errorf("dlq ls: %s", r)
	}

	h.fixed.Store(true)
	r = e.cli("dlq", "replay", "--all", "--rate", "2")
	if r.code != 0 {
		t.Fatalf("dlq replay --all: %s", r)
	}
	out := lines(r.stdout)
	if len(out) != 10 {
		t.Fatalf("dlq replay --all printed %d lines, want 10:\n%s", len(out), r.stdout)
	}
	for i, l := range out {
		want := fmt.Sprintf("replayed %d (run ", entries[i].ID)
		if !strings.HasPrefix(l, want) || !strings.HasSuffix(l, ", node charge)") {
			t.Errorf("line %q, want %q…", l, want)
		}
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		return len(e.runsLs("--status", "completed")) == 10
	}, "the replayed runs did not complete")
	for _, id := range ids {
		if n := h.runsAfterFix(id, "charge"); n != 1 {
			t.Errorf("run %s: charge ran %d times after the fix, want 1", id, n)
		}
		if n := h.runsAfterFix(id, "notify"); n != 1 {
			t.Errorf("run %s: notify ran %d times, want 1", id, n)
		}
	}

	// Again: nothing left, nothing runs.
	r = e.cli("dlq", "replay", "--all")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "no DLQ entries" {
		t.Errorf("second replay --all: %s", r)
	}
	r = e.cli("dlq", "replay", strconv.FormatUint(entries[0].ID, 10))
	if r.code != exitFailed || !strings.Contains(r.msg(), fmt.Sprintf("no DLQ entry %d", entries[0].ID)) {
		t.Errorf("replay of a replayed entry: want exit 1, no DLQ entry; got %s", r)
	}
	for _, id := range ids {
		if n := h.runsAfterFix(id, "charge"); n != 1 {
			t.Errorf("run %s: charge ran %d times after the fix, want 1", id, n)
		}
	}
}

func TestDLQReplayUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq", "replay"}, exitUsage, "--all"},
		{[]string{"dlq", "replay", "1", "2", "--input", `{"input": 1}`}, exitUsage, "exactly one"},
		{[]string{"dlq", "replay", "--all", "--input", `{"input": 1}`}, exitUsage, "exactly one"},
		{[]string{"dlq", "replay", "1", "--all"}, exitUsage, "not both"},
		{[]string{"dlq", "replay", "x1"}, exitUsage, "x1"},
		{[]string{"dlq", "replay", "0"}, exitUsage, "ID"},
		{[]string{"dlq", "replay", "--all", "--rate", "0"}, exitUsage, "--rate"},
		{[]string{"dlq", "replay", "1", "--input", `{"input":`}, exitUsage, "not valid JSON"},
		{[]string{"dlq", "replay", "--all", "--since", "soon"}, exitUsage, "--since"},
		{[]string{"dlq", "show", "abc"}, exitUsage, "abc"},
		{[]string{"dlq", "show", "7"}, exitFailed, "no DLQ entry 7"},
		{[]string{"dlq", "replay", "7"}, exitFailed, "no DLQ entry 7"},
		{[]string{"dlq", "purge", "extra"}, exitUsage, ""},
		{[]string{"runs", "ls", "--status", "done"}, exitUsage, "--status"},
		{[]string{"runs", "ls", "--limit", "-1"}, exitUsage, "--limit"},
		{[]string{"runs", "ls", "--since", "yesterday"}, exitUsage, "--since"},
		{[]string{"runs", "cancel", "nope"}, exitFailed, `no run "nope"`},
		{[]string{"runs", "watch", "nope"}, exitFailed, `no run "nope"`},
		{[]string{"runs", "cancel"}, exitUsage, ""},
	} {
		r := e.cli(c.args...)
		if r.code != c.code || !strings.Contains(r.msg(), c.want) || strings.Contains(r.msg(), "\n") {
			t.Errorf("%s: want exit %d and %q, got %s", strings.Join(c.args, " "), c.code, c.want, r)
		}
	}
}

func TestDLQShowAndEditedReplay(t *testing.T) {
	t.Parallel()
	e, c, h := setupCharge(t)
	h.fixed.Store(true) // only a negative amount fails
	r := e.cli("start", "pay", "--input", `{"amount": -4}`, "--wait")
	if r.code != exitFailed {
		t.Fatalf("start --wait: %s", r)
	}
	run := lines(r.stdout)[0]
	var entries []dlqEntry
	e.jsonOut(&entries, "dlq", "ls", "--json", "--run", run)
	if len(entries) != 1 {
		t.Fatalf("dlq ls --run: %+v", entries)
	}
	id := strconv.FormatUint(entries[0].ID, 10)

	var d struct {
		dlqEntry
		Headers map[string][]string `json:"headers"`
		Input   json.RawMessage     `json:"input"`
		Run     *runView            `json:"run"`
	}
	e.jsonOut(&d, "dlq", "show", id, "--json")
	if d.ID != entries[0].ID || d.RunID != run || d.Error != "card declined\nthe issuer refused amount -4" ||
		compact(d.Input) != `{"input":{"amount":-4},"nodes":{}}` || d.Run == nil || d.Run.Status != "failed" ||
		d.Run.Nodes["charge"].Status != "dead" || d.Headers["Jetflow-Reason"][0] != "permanent error" {
		t.Errorf("dlq show --json: %s", mustJSON(d))
	}
	r = e.cli("dlq", "show", id)
	for _, want := range []string{"entry", "permanent error", "error:\n  card declined\n  the issuer refused amount -4", `"amount": -4`, "Jetflow-Attempts: 1", "run " + run + " failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dlq show lacks %q:\n%s", want, r.stdout)
		}
	}

	edit := `{"input": {"amount": 3}}`
	r = e.cli("dlq", "replay", id, "--input", edit, "--dry-run")
	if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("would replay %s (run %s, node charge, edited input)", id, run) {
		t.Errorf("dry run: %s", r)
	}
	if v := getRun(t, e, run); v.Status != "failed" {
		t.Errorf("a dry run changed the run: %s", v.Status)
	}
	editFile := filepath.Join(t.TempDir(), "edit.json")
	if err := os.WriteFile(editFile, []byte(edit), 0o600); err != nil {
		t.Fatal(err)
	}
	r = e.cli("dlq", "replay", id, "--input", "@"+editFile)
	if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("replayed %s (run %s, node charge, edited input)", id, run) {
		t.Fatalf("edited replay: %s", r)
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return getRun(t, e, run).Status == "completed" }, "the edited replay did not complete the run")
	v := getRun(t, e, run)
	if ch := v.Nodes["charge"]; ch.Status != "done" || compact(ch.Output) != `{"charged":3}` {
		t.Errorf("charge: %s", mustJSON(ch))
	}
	st, _, err := c.store.Node(context.Background(), run, "charge")
	if err != nil || st.EditedFrom != entries[0].ID || string(st.Input) != `{"input":{"amount":3},"nodes":{}}` || st.Replays != 1 {
		t.Errorf("charge state: %+v, %v", st, err)
	}
	h.mu.Lock()
	got := h.input[workflow.IdempotencyKey(run, "charge")]
	h.mu.Unlock()
	if len(got) != 2 || got[1] != `{"input":{"amount":3},"nodes":{}}` {
		t.Errorf("charge received %q", got)
	}
}

func TestDLQReplayRefusedCancelled(t *testing.T) {
	t.Parallel()
	e, c, _ := setupCharge(t)
	r := e.cli("start", "pay", "--wait")
	if r.code != exitFailed {
		t.Fatalf("start --wait: %s", r)
	}
	run := lines(r.stdout)[0]
	var entries []dlqEntry
	e.jsonOut(&entries, "dlq", "ls", "--json")
	if len(entries) != 1 {
		t.Fatalf("entries: %+v", entries)
	}
	// cancel.<run> on a failed run: what an older jetflow's cancel left when it raced the failure.
	if _, err := c.store.KV().Create(context.Background(), workflow.CancelKey(run), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatUint(entries[0].ID, 10)
	r = e.cli("dlq", "replay", id, "99999")
	want := []string{"skipped " + id + ": run cancelled", "skipped 99999: no DLQ entry 99999"}
	if r.code != exitFailed || strings.Join(lines(r.stdout), "|") != strings.Join(want, "|") || !strings.Contains(r.msg(), "2 of 2") {
		t.Errorf("replay of a cancelled run's entry: %s", r)
	}
	r = e.cli("dlq", "replay", id)
	if r.code != exitFailed || !strings.Contains(r.msg(), "run cancelled") {
		t.Errorf("single replay of a cancelled run's entry: %s", r)
	}
	var res []map[string]any
	r = e.cli("dlq", "replay", "--run", run, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &res); r.code != exitFailed || err != nil || len(res) != 1 || res[0]["status"] != "skipped" || res[0]["error"] != "run cancelled" {
		t.Errorf("replay --json: %s", r)
	}
	if n := len(e.runsLs("--status", "failed")); n != 1 {
		t.Errorf("the refused replay changed the run")
	}
}

func TestDLQPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.lib()
	for i, wf := range []string{"a", "a", "b"} {
		env := &workflow.Envelope{RunID: "run-" + strconv.Itoa(i), Workflow: wf, Def: strings.Repeat("0", 64), Node: "n"}
		body, _ := env.Encode()
		if _, err := dlq.Publish(context.Background(), c.js, c.names, body, dlq.Failure{Workflow: wf, Node: "n", RunID: env.RunID, Reason: "permanent error", StreamSeq: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		var entries []dlqEntry
		e.jsonOut(&entries, "dlq", "ls", "--json")
		return len(entries)
	}

	r := e.cliIn("", "dlq", "purge")
	if r.code != exitFailed || !strings.Contains(r.msg(), "--yes") || !strings.Contains(r.stderr, "Delete 3 DLQ entries? [y/N]") {
		t.Errorf("purge without an answer: %s", r)
	}
	if r := e.cliIn("n\n", "dlq", "purge"); r.code != exitFailed || !strings.Contains(r.msg(), "--yes") {
		t.Errorf("purge answered n: %s", r)
	}
	// A standard input that is not a terminal is not asked, even holding "y".
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("y\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr lockedBuffer
	err = run(context.Background(), append([]string{"dlq", "purge"}, e.flags()...), f, &stdout, &stderr)
	if exitCode(err) != exitFailed || !strings.Contains(err.Error(), "not a terminal") || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("purge with a file as stdin: %v", err)
	}
	if n := count(); n != 3 {
		t.Fatalf("refused purges deleted entries: %d left", n)
	}

	if r := e.cliIn("y\n", "dlq", "purge", "--workflow", "b"); r.code != 0 || r.stdout != "deleted 1 DLQ entry\n" || !strings.Contains(r.stderr, "Delete 1 DLQ entry?") {
		t.Errorf("purge --workflow b answered y: %s", r)
	}
	if r := e.cli("dlq", "purge", "--yes"); r.code != 0 || r.stdout != "deleted 2 DLQ entries\n" {
		t.Errorf("purge --yes: %s", r)
	}
	if r := e.cli("dlq", "purge", "--yes"); r.code != 0 || r.stdout != "no DLQ entries\n" {
		t.Errorf("purge of an empty DLQ: %s", r)
	}
}

// TestDLQLsLongReason: the table shows the sweeper's whole reason (62 characters), and cuts a
// longer one on a character boundary, never inside a UTF-8 sequence.
func TestDLQLsLongReason(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.lib()
	ctx := context.Background()
	sweeper := "delivered 20 times without finishing (worker crash or timeout)"
	long := "permanent error: " + strings.Repeat("ошибка ", 30)
	for i, reason := range []string{sweeper, long} {
		f := dlq.Failure{Workflow: "pay", Node: "charge", RunID: fmt.Sprintf("run-%d", i), Reason: reason, Error: reason, StreamSeq: uint64(i + 1)}
		if _, err := dlq.Publish(ctx, c.js, c.names, []byte(`{}`), f); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"dlq", "ls"}, {"dlq", "ls", "--group"}} {
		r := e.cli(args...)
		out := lines(r.stdout)
		if r.code != 0 || len(out) != 3 {
			t.Fatalf("%s: %s", strings.Join(args, " "), r)
		}
		if !strings.HasSuffix(out[1], sweeper) {
			t.Errorf("%s cut the sweeper's reason: %q", strings.Join(args, " "), out[1])
		}
		if !utf8.ValidString(out[2]) || !strings.HasSuffix(out[2], "…") || !strings.Contains(out[2], "permanent error: ошибка") {
			t.Errorf("%s: long reason shown as %q", strings.Join(args, " "), out[2])
		}
	}
}

// TestDLQReplayRate: --rate spaces the replays out. With no worker taking the replayed steps,
// their publish times stay in the steps stream: at --rate 2, each comes at least ~0.5 s after
// the one before (checked with a lower bound of 0.4 s, which a slow machine only exceeds).
func TestDLQReplayRate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.lib()
	ctx := context.Background()
	wf := workflow.New("pay")
	wf.Node("charge", "card")
	c.applyGo(t, wf)
	h := &chargeHandler{}
	stop := e.goWorker(func(w *consumer.Worker) { w.Handle("card", h.handle) })
	for i := range 4 {
		if r := e.cli("start", "pay", "--input", fmt.Sprintf(`{"amount": %d}`, i+1)); r.code != 0 {
			t.Fatalf("start: %s", r)
		}
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		return len(e.runsLs("--status", "failed")) == 4
	}, "4 runs did not fail")
	stop()

	steps, err := c.js.Stream(ctx, c.names.StepsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := steps.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d steps left in the stream before the replay", info.State.Msgs)
	}
	r := e.cli("dlq", "replay", "--all", "--rate", "2")
	if r.code != 0 || len(lines(r.stdout)) != 4 {
		t.Fatalf("dlq replay --all --rate 2: %s", r)
	}
	var at []time.Time
	for seq := info.State.LastSeq + 1; len(at) < 4; seq++ {
		m, err := steps.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("replayed step %d of 4 (stream seq %d): %v", len(at)+1, seq, err)
		}
		if !strings.Contains(m.Header.Get(workflow.HeaderMsgID), ".charge.r") {
			t.Fatalf("stream seq %d is not a replayed step: %v", seq, m.Header)
		}
		at = append(at, m.Time)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 400*time.Millisecond {
			t.Errorf("replay %d was published %v after replay %d; at --rate 2 the gap should be about 500ms (all: %v)", i+1, gap, i, at)
		}
	}
}
