package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// The example map-reduce, branch and subflow workflows, driven through the CLI as the README
// shows them: runs get (text and JSON), runs ls --parent, runs watch and top show the new
// states.
func TestControlFlowExamplesThroughTheCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	e.worker()

	r := e.cli("start", "wordcount", "--input", `{"text":"one two three\nfour five\nsix"}`, "--wait")
	if r.code != 0 {
		t.Fatalf("start wordcount: %s", r)
	}
	id := strings.Fields(r.stdout)[0]
	var v struct {
		Status string `json:"status"`
		Nodes  map[string]struct {
			Status string                           `json:"status"`
			Output json.RawMessage                  `json:"output"`
			Items  *struct{ Count, Done, Dead int } `json:"items"`
			Child  string                           `json:"child"`
		} `json:"nodes"`
	}
	e.jsonOut(&v, "runs", "get", id, "--json")
	if it := v.Nodes["count"].Items; v.Status != "completed" || it == nil || it.Count != 3 || it.Done != 3 || it.Dead != 0 {
		t.Fatalf("wordcount: status %s, count's items %+v; want completed, 3 of 3 done", v.Status, it)
	}
	var merged struct{ Chunks, Words int }
	if err := json.Unmarshal(v.Nodes["merge"].Output, &merged); err != nil || merged.Chunks != 3 || merged.Words != 6 {
		t.Fatalf("merge output %s, want 3 chunks and 6 words", v.Nodes["merge"].Output)
	}
	if r := e.cli("runs", "get", id); !strings.Contains(r.stdout, "done (3/3 items)") {
		t.Fatalf("runs get does not show the items:\n%s", r.stdout)
	}

	r = e.cli("start", "triage", "--input", `{"text":"how do I export?"}`, "--wait")
	if r.code != 0 {
		t.Fatalf("start triage: %s", r)
	}
	id = strings.Fields(r.stdout)[0]
	e.jsonOut(&v, "runs", "get", id, "--json")
	if v.Nodes["page_oncall"].Status != "skipped" || v.Nodes["reply"].Status != "done" {
		t.Fatalf("triage nodes %+v: want page_oncall skipped, reply done", v.Nodes)
	}
	if r := e.cli("runs", "watch", id); r.code != 0 || !strings.Contains(r.stdout, "page_oncall skipped") {
		t.Fatalf("runs watch does not show the skip: %s", r)
	}

	r = e.cli("start", "research", "--wait")
	if r.code != 0 {
		t.Fatalf("start research: %s", r)
	}
	id = strings.Fields(r.stdout)[0]
	e.jsonOut(&v, "runs", "get", id, "--json")
	child := v.Nodes["count_source"].Child
	if child == "" || v.Nodes["count_source"].Status != "done" {
		t.Fatalf("research's subflow node %+v: want done with a child", v.Nodes["count_source"])
	}
	kids := e.runsLs("--parent", id)
	if len(kids) != 1 || kids[0].ID != child || kids[0].Status != "completed" {
		t.Fatalf("runs ls --parent %s: %+v; want the one completed child %s", id, kids, child)
	}
	if r := e.cli("top", "--once"); r.code != 0 || !strings.Contains(r.stdout, "CONTROL FLOW") {
		t.Fatalf("top --once does not show control flow:\n%s", r)
	}
}
