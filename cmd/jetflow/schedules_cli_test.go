package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSchedulesSession: bad specs and unknown workflows are exit 2, a taken name and an
// unknown one exit 1; a schedule fires on the server while no worker runs, and each fire
// becomes one run <name>-<unix seconds> once a worker comes; ls shows the next fire and the
// last run; pause stops the fires, resume starts them again, rm removes the schedule.
func TestSchedulesSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"schedules", "add", "d", "--workflow", "digest", "--cron", "61 * * * *"}, exitUsage, "--cron"},
		{[]string{"schedules", "add", "d", "--workflow", "digest", "--cron", "0 9 * * *", "--tz", "Mars/Olympus"}, exitUsage, "time zone"},
		{[]string{"schedules", "add", "d", "--workflow", "digest", "--every", "100ms"}, exitUsage, "at least 1s"},
		{[]string{"schedules", "add", "d", "--workflow", "digest"}, exitUsage, "give one of --every"},
		{[]string{"schedules", "add", "d", "--workflow", "nope", "--every", "1h"}, exitUsage, `unknown workflow "nope"`},
		{[]string{"schedules", "rm", "nope"}, exitFailed, `no schedule "nope"`},
	} {
		r := e.cli(tc.args...)
		if r.code != tc.code || !strings.Contains(r.msg(), tc.want) {
			t.Errorf("%v: want exit %d saying %q: %s", tc.args, tc.code, tc.want, r)
		}
	}
	if r := e.cli("schedules", "add", "tick", "--workflow", "digest", "--every", "1s", "--input", `{"channel": "#ops"}`); r.code != 0 {
		t.Fatalf("schedules add: %s", r)
	}
	if r := e.cli("schedules", "add", "tick", "--workflow", "digest", "--every", "1h"); r.code != exitFailed || !strings.Contains(r.msg(), "schedule tick exists") {
		t.Errorf("a taken name: want exit 1: %s", r)
	}
	if r := e.cli("schedules", "add", "nightly", "--workflow", "digest", "--cron", "0 2 * * *", "--tz", "Europe/Paris"); r.code != 0 {
		t.Fatalf("schedules add --cron: %s", r)
	}
	// No worker yet: the server fires regardless; the fires wait as start requests.
	time.Sleep(3500 * time.Millisecond)
	e.worker()
	runs := func() []string {
		r := e.cli("runs", "ls", "--workflow", "digest", "--limit", "0", "--json")
		var v []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		_ = json.Unmarshal([]byte(r.stdout), &v)
		var ids []string
		for _, x := range v {
			if strings.HasPrefix(x.ID, "tick-") && x.Status == "completed" {
				ids = append(ids, x.ID)
			}
		}
		return ids
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(runs()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the fires made while no worker ran did not become runs: %v", runs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := e.cli("schedules", "ls", "--json")
	var ls []scheduleView
	if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil || len(ls) != 2 {
		t.Fatalf("schedules ls --json: %v\n%s", err, r.stdout)
	}
	if ls[1].Name != "tick" || ls[1].Spec != "@every 1s" || ls[1].NextFire == nil || !strings.HasPrefix(ls[1].LastRun, "tick-") || ls[1].Paused {
		t.Errorf("ls: %+v", ls[1])
	}
	if ls[0].Name != "nightly" || ls[0].Spec != "cron 0 0 2 * * * (Europe/Paris)" || ls[0].NextFire == nil || ls[0].NextFire.UTC().Hour()%24 > 2 {
		t.Errorf("ls: %+v, want nightly at 02:00 Paris (00:00 or 01:00 UTC)", ls[0])
	}
	if r := e.cli("schedules", "pause", "tick"); r.code != 0 {
		t.Fatalf("pause: %s", r)
	}
	time.Sleep(2 * time.Second) // a fire already on its way lands
	before := len(runs())
	time.Sleep(3 * time.Second)
	if after := len(runs()); after != before {
		t.Errorf("%d runs started while the schedule was paused", after-before)
	}
	if r := e.cli("schedules", "resume", "tick"); r.code != 0 {
		t.Fatalf("resume: %s", r)
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(runs()) <= before {
		if time.Now().After(deadline) {
			t.Fatal("no fire after resume")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{"tick", "nightly"} {
		if r := e.cli("schedules", "rm", name); r.code != 0 {
			t.Errorf("rm %s: %s", name, r)
		}
	}
	if r := e.cli("schedules", "ls", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("ls after rm: %s", r.stdout)
	}
	// Each fire is one run: the IDs are distinct seconds.
	seen := map[string]bool{}
	for _, id := range runs() {
		if seen[id] {
			t.Errorf("run %s twice", id)
		}
		seen[id] = true
	}
}
