package nodes_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/dlq"
)

// fleetServiceEnv makes this test binary a service instance of TestServiceFleet (its value
// is the instance's name) instead of running tests.
const fleetServiceEnv = "JETFLOW_TEST_FLEET_SERVICE"

// fleetService is one instance of the fleet.work service, in a process of its own. It says
// "ready" once it answers, "served <run>" after each reply, and on a "hold" step's first
// attempt "holding <pid>", then sends heartbeats and never replies, until it is killed.
func fleetService(name string) int {
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet service:", err)
		return 1
	}
	defer nc.Close()
	var mu sync.Mutex // one line at a time on stdout
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "fleet", Version: "1.0.0"})
	if err == nil {
		err = svc.AddEndpoint("work", micro.HandlerFunc(func(r micro.Request) {
			var in struct {
				Input struct{ Mode string } `json:"input"`
			}
			_ = json.Unmarshal(r.Data(), &in)
			run := r.Headers().Get("Jetflow-Run")
			if in.Input.Mode == "hold" && r.Headers().Get("Jetflow-Attempt") == "1" {
				say("holding %d", os.Getpid())
				for {
					_ = nc.Publish(r.Headers().Get("Jetflow-Progress"), nil)
					time.Sleep(100 * time.Millisecond)
				}
			}
			_ = r.RespondJSON(map[string]string{"instance": name})
			say("served %s", run)
		}), micro.WithEndpointSubject("fleet.work"))
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet service:", err)
		return 1
	}
	say("ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	_ = svc.Stop()
	return 0
}

// fleetInstance is a running instance of fleetService and the lines it printed.
type fleetInstance struct {
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	line  chan string
}

func (f *fleetInstance) said(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// startFleetInstance runs this test binary as service instance name against url.
func startFleetInstance(t *testing.T, name, url string) *fleetInstance {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fleetServiceEnv+"="+name, "NATS_URL="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fleetInstance{name: name, cmd: cmd, line: make(chan string, 1024)}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.mu.Lock()
			f.lines = append(f.lines, sc.Text())
			f.mu.Unlock()
			select {
			case f.line <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-read
		_ = cmd.Wait()
	})
	select {
	case l := <-f.line:
		if l != "ready" {
			t.Fatalf("instance %s said %q before ready", name, l)
		}
	case <-read:
		t.Fatalf("instance %s exited before it was ready", name)
	case <-time.After(30 * time.Second):
		t.Fatalf("instance %s was not ready within 30 s", name)
	}
	return f
}

// TestServiceFleet: three instances of a service, each a process of its own, share the
// steps of 30 runs (NATS queue groups spread them); one instance is SIGKILLed while it holds
// a request (sending heartbeats until it dies): its silence fails the attempt, the retry is
// answered by another instance, and the node is recorded once.
func TestServiceFleet(t *testing.T) {
	t.Parallel()
	e := newProtectedEnv(t, `name: fleet
nodes:
  - name: call
    type: service
    timeout: 1m
    retry: {max_attempts: 3, initial: 50ms, max: 100ms}
    with: {subject: fleet.work, timeout: 1s}
`)
	url := e.srv.ClientURL()
	var fleet []*fleetInstance
	for _, name := range []string{"a", "b", "c"} {
		fleet = append(fleet, startFleetInstance(t, name, url))
	}
	ctx := context.Background()

	const runs = 30
	ids := make([]string, runs)
	for i := range ids {
		ids[i] = e.start(t, "fleet", map[string]string{"mode": "spread"})
	}
	served := map[string]int{}
	for _, id := range ids {
		if end := e.wait(t, id, 60*time.Second); end.Status != checkpoint.EndCompleted {
			t.Fatalf("run %s: %s (%s)", id, end.Status, end.Reason)
		}
		st, _, _ := e.store.Node(ctx, id, "call")
		var out struct{ Instance string }
		_ = json.Unmarshal(st.Output, &out)
		served[out.Instance]++
	}
	for _, f := range fleet {
		if served[f.name] == 0 {
			t.Errorf("instance %s served none of %d runs: %v", f.name, runs, served)
		}
	}

	id := e.start(t, "fleet", map[string]string{"mode": "hold"})
	var held *fleetInstance
	deadline := time.After(30 * time.Second)
	for held == nil {
		for _, f := range fleet {
			if len(f.said("holding ")) > 0 {
				held = f
			}
		}
		select {
		case <-deadline:
			t.Fatal("no instance took the hold step within 30 s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := held.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	end := e.wait(t, id, 60*time.Second)
	st, _, _ := e.store.Node(ctx, id, "call")
	if end.Status != checkpoint.EndCompleted || st.Attempts != 2 {
		t.Fatalf("the held run: %s (%s), %d attempts (%s), want completed in 2", end.Status, end.Reason, st.Attempts, st.LastError)
	}
	var out struct{ Instance string }
	_ = json.Unmarshal(st.Output, &out)
	if out.Instance == held.name || out.Instance == "" {
		t.Errorf("the retry was answered by %q; instance %s was killed", out.Instance, held.name)
	}
	times := 0
	for _, f := range fleet {
		for _, l := range f.said("served ") {
			if l == "served "+id {
				times++
			}
		}
	}
	if times != 1 {
		t.Errorf("the held run's step was answered %d times, want 1", times)
	}
	if entries, _ := dlq.List(ctx, e.js, e.names, dlq.Filter{Workflow: "fleet"}); len(entries) != 0 {
		t.Errorf("%d DLQ entries, want none", len(entries))
	}
}
