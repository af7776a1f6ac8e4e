package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// TestServicesSession: `workflows apply` warns when a service node's subject has no service;
// `services ls` lists the micro services the cluster sees, grouped by name and version, with
// instances, endpoints and request counts; once the service runs, apply warns no more.
func TestServicesSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	def := filepath.Join(t.TempDir(), "ask.yaml")
	writeFile(t, def, "name: ask\nnodes:\n  - {name: call, type: service, with: {subject: svc.summarize}}\n")
	if r := e.cli("workflows", "apply", def); r.code != 0 || !strings.Contains(r.stderr, "no NATS service answers on svc.summarize") {
		t.Errorf("apply without a service: want exit 0 and a warning: %s", r)
	}
	nc, _ := e.srv.Connect(t)
	for range 2 {
		svc, err := micro.AddService(nc, micro.Config{Name: "summarizer", Version: "1.2.0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
		if err := svc.AddGroup("svc").AddEndpoint("summarize", micro.HandlerFunc(func(r micro.Request) { _ = r.RespondJSON("ok") })); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nc.Request("svc.summarize", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r := e.cli("services", "ls", "--json")
	var v []serviceView
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		t.Fatalf("services ls --json: %s", r)
	}
	if len(v) != 1 || v[0].Name != "summarizer" || v[0].Version != "1.2.0" || v[0].Instances != 2 || len(v[0].Endpoints) != 1 ||
		v[0].Endpoints[0].Subject != "svc.summarize" || v[0].Requests != 1 {
		t.Errorf("services ls --json: %+v", v)
	}
	if r := e.cli("services", "ls"); !strings.Contains(r.stdout, "summarizer  1.2.0    2          svc.summarize  1") {
		t.Errorf("services ls:\n%s", r.stdout)
	}
	if r := e.cli("workflows", "apply", def); r.code != 0 || strings.Contains(r.stderr, "no NATS service answers") {
		t.Errorf("apply with the service up: want no warning: %s", r)
	}
}
