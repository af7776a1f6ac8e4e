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
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// deployDir holds the deployment files the *_deploy_test.go files check.
const deployDir = "../../deploy"

// rolePasswords are the passwords deploy/nats/accounts.conf reads from the environment.
var rolePasswords = map[string]string{
	"producer": "producer-secret",
	"worker":   "worker-secret",
	"operator": "operator-secret",
}

// violations records the permission violations a server logs.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Fatalf(string, ...any)  {}
func (v *violations) Debugf(string, ...any)  {}
func (v *violations) Tracef(string, ...any)  {}
func (v *violations) Errorf(format string, args ...any) {
	if line := fmt.Sprintf(format, args...); strings.Contains(line, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

// take returns the violations logged since the last call and forgets them.
func (v *violations) take() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := v.lines
	v.lines = nil
	return out
}

// startRoleServer runs a nats-server with the accounts and permissions of
// deploy/nats/accounts.conf, on loopback with JetStream in a temporary directory.
func startRoleServer(t *testing.T) (string, *violations) {
	t.Helper()
	dir := t.TempDir()
	accounts, err := os.ReadFile(filepath.Join(deployDir, "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// The file reads the passwords from the server's environment; put them in the copy.
	for role, pw := range rolePasswords {
		ref := []byte("$JETFLOW_" + strings.ToUpper(role) + "_PASSWORD")
		if !bytes.Contains(accounts, ref) {
			t.Fatalf("deploy/nats/accounts.conf: the %s user's password is not %s", role, ref)
		}
		accounts = bytes.ReplaceAll(accounts, ref, []byte(strconv.Quote(pw)))
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude ./accounts.conf\n", filepath.Join(dir, "js"))
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "server.conf"))
	if err != nil {
		t.Fatalf("deploy/nats/accounts.conf: %v", err)
	}
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{}
	s.SetLoggerV2(v, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server with deploy/nats/accounts.conf did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL(), v
}

// TestDeployNATSPermissions runs jetflow on a server configured with deploy/nats/accounts.conf:
// the operator sets up, a worker runs steps (DLQ, schedules, joins) and a producer starts runs,
// each as its own user, without a single permission violation; then each role is refused what
// it must not do.
func TestDeployNATSPermissions(t *testing.T) {
	t.Parallel()
	url, viol := startRoleServer(t)
	// The server answers a denied request with nothing (the client gets an asynchronous
	// error), so a refused command runs into its deadline: keep those short.
	within := func(d time.Duration, role string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return runCLI(t, ctx, "", append(args, "--nats", url, "--user", role, "--password", rolePasswords[role])...)
	}
	as := func(role string, args ...string) result {
		t.Helper()
		return within(60*time.Second, role, args...)
	}
	noViolations := func(step string) {
		t.Helper()
		if v := viol.take(); len(v) > 0 {
			t.Errorf("%s: the server logged permission violations:\n%s", step, strings.Join(v, "\n"))
		}
	}

	if r := as("operator", "setup"); r.code != 0 {
		t.Fatalf("operator: setup: %s", r)
	}
	if r := as("operator", "workflows", "apply", examplesDir); r.code != 0 {
		t.Fatalf("operator: workflows apply: %s", r)
	}
	noViolations("operator")

	e := &testEnv{t: t, url: url, prefix: workflow.DefaultPrefix}
	e.worker("--user", "worker", "--password", rolePasswords["worker"])

	for _, c := range []struct {
		workflow string
		code     int
	}{{"diamond", 0}, {"nap", 0}, {"broken", exitFailed}} {
		if r := as("producer", "start", c.workflow, "--input", `{"n":1}`, "--wait", "--timeout", "45s"); r.code != c.code {
			t.Errorf("producer: start %s --wait: want exit %d, got %s", c.workflow, c.code, r)
		}
	}
	noViolations("producer and worker running diamond, nap and broken")

	// A large input: the producer stores it as a blob, the worker reads it back for the
	// exec nodes' stdin, and a node's large output travels as a blob too.
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, []byte(`{"n":1,"doc":"`+strings.Repeat("x", 1<<20)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := as("producer", "start", "diamond", "--input", "@"+big, "--wait", "--timeout", "45s"); r.code != 0 {
		t.Errorf("producer: start diamond with a 1 MiB input --wait: %s", r)
	}
	noViolations("producer and worker running diamond with a 1 MiB input")

	// The worker's read-only views work.
	if r := as("worker", "dlq", "ls", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"broken"`) {
		t.Errorf("worker: dlq ls: want the broken run's entry, got %s", r)
	}
	noViolations("worker: dlq ls")

	// What each role must not do.
	for _, c := range []struct {
		role string
		args []string
	}{
		{"worker", []string{"dlq", "purge", "--yes"}},
		{"worker", []string{"setup"}},
		{"producer", []string{"dlq", "ls"}},
		{"producer", []string{"setup"}},
	} {
		if r := within(3*time.Second, c.role, c.args...); r.code == 0 {
			t.Errorf("%s: %s must be refused, got %s", c.role, strings.Join(c.args, " "), r)
		}
	}
	refused := func(role, what string, fn func(context.Context, jetstream.JetStream) error) {
		t.Helper()
		nc, err := nats.Connect(url, nats.UserInfo(role, rolePasswords[role]), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("%s: connect: %v", role, err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := fn(ctx, js); err == nil {
			t.Errorf("%s: %s must be refused", role, what)
		}
	}
	names := workflow.MustNames(workflow.DefaultPrefix)
	refused("worker", "deleting the steps stream", func(ctx context.Context, js jetstream.JetStream) error {
		return js.DeleteStream(ctx, names.StepsStream())
	})
	refused("worker", "deleting a node-type consumer", func(ctx context.Context, js jetstream.JetStream) error {
		return js.DeleteConsumer(ctx, names.StepsStream(), names.Consumer("noop"))
	})
	refused("producer", "publishing to the DLQ", func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.Publish(ctx, names.DLQSubject("diamond", "fetch"), []byte("{}"))
		return err
	})
	refused("producer", "publishing a step (a forged step of a run it never started)", func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.Publish(ctx, names.StepSubject("noop", "diamond", "fetch"), []byte(`{"v":1,"run_id":"forged","workflow":"diamond","def":"x","node":"fetch","input":{},"dispatch":"d"}`))
		return err
	})
	refused("producer", "writing a run record", func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.Publish(ctx, "$KV."+names.RunsBucket()+"."+workflow.RunKey("forged"), []byte(`{"id":"forged"}`))
		return err
	})
	refused("producer", "writing a node state", func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.Publish(ctx, "$KV."+names.RunsBucket()+"."+workflow.NodeKey("r1", "fetch"), []byte(`{"status":"done"}`))
		return err
	})
	if v := viol.take(); len(v) == 0 {
		t.Error("the refused requests should have been logged as permission violations")
	}

	// The operator can do all of it.
	if r := as("operator", "dlq", "purge", "--yes"); r.code != 0 {
		t.Errorf("operator: dlq purge: %s", r)
	}
	r := as("operator", "workers", "ls", "--json")
	var ws []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ws); r.code != 0 || err != nil || len(ws) != 1 {
		t.Errorf("operator: workers ls --json: want the one worker, got %s", r)
	}
	noViolations("operator")
}
