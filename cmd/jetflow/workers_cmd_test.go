package main

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

func TestWorkersLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := e.cli("workers", "ls", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("workers ls --json with no worker: want [], got %s", r)
	}
	if r := e.cli("workers", "ls"); r.code != 0 || !strings.Contains(r.stdout, "No live workers") {
		t.Errorf("workers ls with no worker: %s", r)
	}

	e.worker("--types", "noop,sleep", "--concurrency", "3")
	var ws []consumer.Presence
	natstest.Eventually(t, 15*time.Second, func() bool {
		r = e.cli("workers", "ls", "--json")
		ws = nil
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &ws) == nil && len(ws) == 1
	}, "workers ls --json never showed the running worker: %s", r)
	w := ws[0]
	host, _ := os.Hostname()
	if w.ID == "" || w.Host != host || w.PID != os.Getpid() || w.Version != version ||
		!slices.Equal(w.Types, []string{"noop", "sleep"}) || w.Started.IsZero() || time.Since(w.Seen) > 15*time.Second {
		t.Errorf("workers ls --json: %+v; want this process's worker of noop and sleep, seen just now", w)
	}

	r = e.cli("workers", "ls")
	if r.code != 0 {
		t.Fatalf("workers ls: %s", r)
	}
	ls := lines(r.stdout)
	if len(ls) != 2 || !strings.HasPrefix(ls[0], "ID") || !strings.Contains(ls[0], "IN-FLIGHT") {
		t.Fatalf("workers ls: want a header and one line:\n%s", r.stdout)
	}
	for _, want := range []string{w.ID, host, strconv.Itoa(os.Getpid()), "noop,sleep", " ago"} {
		if !strings.Contains(ls[1], want) {
			t.Errorf("workers ls line lacks %q: %s", want, ls[1])
		}
	}
}

// TestWorkersLsStale keeps records that were not refreshed out of the list, and says what to
// do when the install is missing.
func TestWorkersLsStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, js := e.srv.Connect(t)
	kv, err := js.KeyValue(t.Context(), workflow.MustNames(e.prefix).WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := json.Marshal(consumer.Presence{ID: "gone", Types: []string{"noop"}, Seen: time.Now().Add(-time.Minute)})
	fresh, _ := json.Marshal(consumer.Presence{ID: "here", Types: []string{"noop"}, Seen: time.Now()})
	if _, err := kv.Put(t.Context(), "gone", stale); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "here", fresh); err != nil {
		t.Fatal(err)
	}
	r := e.cli("workers", "ls", "--json")
	var ws []consumer.Presence
	if err := json.Unmarshal([]byte(r.stdout), &ws); err != nil || len(ws) != 1 || ws[0].ID != "here" {
		t.Errorf("workers ls --json: want only the fresh record, got %s", r)
	}

	r = runCLI(t, t.Context(), "", "workers", "ls", "--nats", e.url, "--prefix", "nothing-here")
	if r.code != exitFailed || !strings.Contains(r.msg(), "jetflow setup") {
		t.Errorf("workers ls on a prefix never set up: want exit 1 and a hint to run setup, got %s", r)
	}
}
