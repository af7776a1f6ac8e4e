package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/authtest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// deployAccounts is the account and role configuration shipped for nats-server.
const deployAccounts = "../../deploy/nats/accounts.conf"

// secRolePasswords are the passwords deploy/nats/accounts.conf reads as $JETFLOW_<ROLE>_PASSWORD.
var secRolePasswords = map[string]string{
	"producer": "producer-pw-sec",
	"worker":   "worker-pw-sec",
	"operator": "operator-pw-sec",
}

// roleServer is a real nats-server running deploy/nats/accounts.conf.
type roleServer struct {
	*authtest.Server
	t *testing.T
}

// startDeployRoles loads deploy/nats/accounts.conf (its passwords given as variables, not
// through the shared process environment) into a nats-server on loopback.
func startDeployRoles(t *testing.T) *roleServer {
	t.Helper()
	vars := map[string]string{}
	for role, pw := range secRolePasswords {
		vars["JETFLOW_"+strings.ToUpper(role)+"_PASSWORD"] = pw
	}
	return &roleServer{Server: authtest.Start(t, authtest.LoadConfig(t, deployAccounts, vars)), t: t}
}

// as runs the CLI in-process as role.
func (s *roleServer) as(role string, args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCLI(s.t, ctx, "", append(args, "--nats", s.URL, "--user", role, "--password", secRolePasswords[role])...)
}

// bin runs the real binary as role, as a user would (no deadline but the CLI's own).
func (s *roleServer) bin(role string, args ...string) result {
	s.t.Helper()
	return runBin(s.t, nil, append(args, "--nats", s.URL, "--user", role, "--password", secRolePasswords[role])...)
}

// bugRefusedMessage names a bug that breaks the one-line error contract when NATS refuses
// a request: while it is set, that check is skipped with this text. Empty it once fixed.
const bugRefusedMessage = ""

// mustRefuse checks that a CLI command run as role exits 1, ending with a `jetflow: …`
// line, and (unless bugRefusedMessage) that this line is all it printed on stderr and says
// that NATS refused the request.
func (s *roleServer) mustRefuse(t *testing.T, role string, args ...string) {
	t.Helper()
	r := s.bin(role, args...)
	cmd := strings.Join(args, " ")
	if r.code != exitFailed {
		t.Errorf("%s: `jetflow %s` must be refused with exit 1; got %s", role, cmd, r)
		return
	}
	l := lines(r.stderr)
	if len(l) == 0 || !strings.HasPrefix(l[len(l)-1], "jetflow: ") {
		t.Errorf("%s: `jetflow %s`: want a `jetflow: …` line on stderr, got %q", role, cmd, r.stderr)
		return
	}
	t.Logf("%s: `jetflow %s` refused; stderr: %q", role, cmd, r.stderr)
	t.Run(cmd+": one line saying NATS refused it", func(t *testing.T) {
		if bugRefusedMessage != "" {
			t.Skip("known bug: " + bugRefusedMessage)
		}
		if len(l) != 1 || !strings.Contains(l[0], "refused") {
			t.Errorf("%s: `jetflow %s`: want one line that says NATS refused the request, got %q", role, cmd, r.stderr)
		}
	})
}

// js connects as role, named so that its violations can be told apart.
func (s *roleServer) js(t *testing.T, role, name string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.UserInfo(role, secRolePasswords[role]), nats.Name(name),
		// The refused requests are reported here too; the server's log is what the test reads.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("%s: connect: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// allowed runs fn as role and fails unless it succeeds without a permission violation.
func (s *roleServer) allowed(t *testing.T, role, what string, fn func(context.Context, jetstream.JetStream) error) {
	t.Helper()
	name := fmt.Sprintf("allowed %s %s", role, what)
	js := s.js(t, role, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fn(ctx, js); err != nil {
		t.Errorf("%s: %s: %v", role, what, err)
	}
	if v := s.Log.Matching(name); len(v) > 0 {
		t.Errorf("%s: %s: the server logged violations:\n%s", role, what, strings.Join(v, "\n"))
	}
}

// refused runs fn as role and fails unless it fails and the server logged a violation for
// subject on that connection. A refused JetStream API request gets no answer, so fn's
// context ends it.
func (s *roleServer) refused(t *testing.T, role, what, subject string, fn func(context.Context, jetstream.JetStream) error) {
	t.Helper()
	name := fmt.Sprintf("refused %s %s", role, what)
	js := s.js(t, role, name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := fn(ctx, js); err == nil {
		t.Errorf("%s: %s must be refused, and it succeeded", role, what)
		return
	}
	// The violation is logged as the server reads the request, before fn gives up.
	if v := s.Log.Matching(name, `"`+subject); len(v) == 0 {
		t.Errorf("%s: %s failed, but the server logged no violation for %s; it logged:\n%s", role, what, subject, strings.Join(s.Log.Matching(name), "\n"))
	}
}

// TestPermSecRoles runs jetflow on a server configured with deploy/nats/accounts.conf, each
// role as its own user: the operator sets up, a real worker runs steps under the worker
// identity, a producer starts runs; each role can do what it needs and is refused the rest.
func TestPermSecRoles(t *testing.T) {
	t.Parallel()
	s := startDeployRoles(t)
	names := workflow.MustNames(workflow.DefaultPrefix)

	if r := s.as("operator", "setup"); r.code != 0 {
		t.Fatalf("operator: setup: %s", r)
	}
	if r := s.as("operator", "workflows", "apply", examplesDir); r.code != 0 {
		t.Fatalf("operator: workflows apply: %s", r)
	}
	e := &testEnv{t: t, url: s.URL, prefix: workflow.DefaultPrefix}
	e.worker("--user", "worker", "--password", secRolePasswords["worker"])

	// The producer starts runs; the worker consumes their steps, checkpoints them, and puts
	// the broken one in the DLQ.
	r := s.as("producer", "start", "diamond", "--input", `{"n": 1}`, "--wait", "--timeout", "90s")
	out := lines(r.stdout)
	if r.code != 0 || len(out) != 2 || out[1] != "completed" {
		t.Fatalf("producer: start diamond --wait: want completed, exit 0; got %s", r)
	}
	diamondID := out[0]
	r = s.as("producer", "start", "broken", "--wait", "--timeout", "90s")
	out = lines(r.stdout)
	if r.code != exitFailed || len(out) != 2 || !strings.HasPrefix(out[1], "failed") {
		t.Fatalf("producer: start broken --wait: want failed, exit 1; got %s", r)
	}
	brokenID := out[0]

	r = s.as("operator", "runs", "get", diamondID, "--json")
	var v runView
	if err := json.Unmarshal([]byte(r.stdout), &v); r.code != 0 || err != nil {
		t.Fatalf("operator: runs get %s --json: %v; %s", diamondID, err, r)
	}
	for _, n := range []string{"fetch", "words", "shout", "report"} {
		if nv := v.Nodes[n]; nv == nil || nv.Status != "done" {
			t.Errorf("diamond node %s: want done (checkpointed by the worker), got %s", n, mustJSON(nv))
		}
	}
	if got := dlqRuns(t, s.as("worker", "dlq", "ls", "--json")); len(got) != 1 || got[0] != brokenID {
		t.Errorf("worker: dlq ls: want the entry of run %s, got %v", brokenID, got)
	}
	if viol := s.Log.Lines(); len(viol) > 0 {
		t.Errorf("running diamond and broken, the server logged permission violations (a role lacks a permission it needs):\n%s", strings.Join(viol, "\n"))
	}

	t.Run("worker can", func(t *testing.T) {
		s.allowed(t, "worker", "consume a step of a new node type", func(ctx context.Context, js jetstream.JetStream) error {
			if _, err := js.Publish(ctx, names.StepSubject("probe", "permprobe", "n"), []byte(`{}`)); err != nil {
				return fmt.Errorf("publish a step: %w", err)
			}
			c, err := js.CreateConsumer(ctx, names.StepsStream(), jetstream.ConsumerConfig{
				Durable: names.Consumer("probe"), FilterSubject: names.StepFilter("probe"), AckPolicy: jetstream.AckExplicitPolicy,
			})
			if err != nil {
				return fmt.Errorf("create the consumer: %w", err)
			}
			batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				return fmt.Errorf("fetch: %w", err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				if err := m.DoubleAck(ctx); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
			}
			if n != 1 {
				return fmt.Errorf("fetched %d steps, want 1 (%w)", n, batch.Error())
			}
			return nil
		})
		s.allowed(t, "worker", "write a checkpoint", func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, names.RunsBucket())
			if err != nil {
				return err
			}
			key := workflow.NodeKey("permprobe", "n")
			rev, err := kv.Create(ctx, key, []byte(`{"status":"running"}`))
			if err != nil {
				return fmt.Errorf("create %s: %w", key, err)
			}
			if _, err := kv.Update(ctx, key, []byte(`{"status":"done"}`), rev); err != nil {
				return fmt.Errorf("update %s: %w", key, err)
			}
			if e, err := kv.Get(ctx, key); err != nil || string(e.Value()) != `{"status":"done"}` {
				return fmt.Errorf("get %s: %w", key, err)
			}
			return kv.Delete(ctx, key)
		})
		s.allowed(t, "worker", "publish to the DLQ", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, names.DLQSubject("permprobe", "n"), []byte(`{}`))
			return err
		})
	})

	t.Run("worker cannot", func(t *testing.T) {
		s.mustRefuse(t, "worker", "dlq", "purge", "--yes")
		for _, c := range []struct {
			what, subject string
			fn            func(context.Context, jetstream.JetStream) error
		}{
			{"purge the DLQ stream", "$JS.API.STREAM.PURGE." + names.DLQStream(), func(ctx context.Context, js jetstream.JetStream) error {
				return purge(ctx, js, names.DLQStream())
			}},
			{"delete the steps stream", "$JS.API.STREAM.DELETE." + names.StepsStream(), func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, names.StepsStream())
			}},
			{"delete the DLQ stream", "$JS.API.STREAM.DELETE." + names.DLQStream(), func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, names.DLQStream())
			}},
			{"delete the runs bucket", "$JS.API.STREAM.DELETE.KV_" + names.RunsBucket(), func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteKeyValue(ctx, names.RunsBucket())
			}},
			{"shorten the DLQ's max age", "$JS.API.STREAM.UPDATE." + names.DLQStream(), func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: names.DLQStream(), Subjects: names.DLQSubjects(), MaxAge: time.Second})
				return err
			}},
		} {
			t.Run(c.what, func(t *testing.T) {
				t.Parallel()
				s.refused(t, "worker", c.what, c.subject, c.fn)
			})
		}
	})

	t.Run("producer cannot", func(t *testing.T) {
		s.mustRefuse(t, "producer", "dlq", "purge", "--yes")
		s.mustRefuse(t, "producer", "setup")
		steps := names.StepsStream()
		exec := names.Consumer("exec")
		for _, c := range []struct {
			what, subject string
			fn            func(context.Context, jetstream.JetStream) error
		}{
			{"bind a steps consumer", "$JS.API.CONSUMER.INFO." + steps + "." + exec, func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Consumer(ctx, steps, exec)
				return err
			}},
			{"pull steps", "$JS.API.CONSUMER.MSG.NEXT." + steps + "." + exec, func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Conn().RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+steps+"."+exec, []byte(`{"batch":1,"no_wait":true}`))
				return err
			}},
			{"create a steps consumer", "$JS.API.CONSUMER.CREATE." + steps + ".thief", func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.CreateConsumer(ctx, steps, jetstream.ConsumerConfig{Name: "thief", FilterSubject: names.StepFilter("exec")})
				return err
			}},
			{"purge the DLQ stream", "$JS.API.STREAM.PURGE." + names.DLQStream(), func(ctx context.Context, js jetstream.JetStream) error {
				return purge(ctx, js, names.DLQStream())
			}},
			{"delete the steps stream", "$JS.API.STREAM.DELETE." + steps, func(ctx context.Context, js jetstream.JetStream) error {
				return js.DeleteStream(ctx, steps)
			}},
			{"publish to the DLQ", names.DLQSubject("diamond", "fetch"), func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, names.DLQSubject("diamond", "fetch"), []byte(`{}`))
				return err
			}},
			{"write a node state", "$KV." + names.RunsBucket() + "." + workflow.NodeKey(diamondID, "report"), func(ctx context.Context, js jetstream.JetStream) error {
				_, err := js.Publish(ctx, "$KV."+names.RunsBucket()+"."+workflow.NodeKey(diamondID, "report"), []byte(`{"status":"dead"}`))
				return err
			}},
		} {
			t.Run(c.what, func(t *testing.T) {
				t.Parallel()
				s.refused(t, "producer", c.what, c.subject, c.fn)
			})
		}
	})

	t.Run("operator can", func(t *testing.T) {
		if r := s.as("operator", "dlq", "purge", "--yes"); r.code != 0 {
			t.Errorf("operator: dlq purge --yes: %s", r)
		}
		if got := dlqRuns(t, s.as("operator", "dlq", "ls", "--json")); len(got) != 0 {
			t.Errorf("operator: dlq ls after purge: want no entries, got %v", got)
		}
		// The DLQ stream is the one the running worker holds no consumer on.
		s.allowed(t, "operator", "purge and delete streams", func(ctx context.Context, js jetstream.JetStream) error {
			if err := purge(ctx, js, names.StepsStream()); err != nil {
				return err
			}
			return js.DeleteStream(ctx, names.DLQStream())
		})
		if r := s.as("operator", "setup"); r.code != 0 {
			t.Errorf("operator: setup after deleting the DLQ stream: %s", r)
		}
		if got := dlqRuns(t, s.as("operator", "dlq", "ls", "--json")); len(got) != 0 {
			t.Errorf("operator: dlq ls after re-creating the DLQ: want no entries, got %v", got)
		}
	})
}

// purge purges a stream with one JetStream API request (no stream info first, so that a
// refusal is the purge's own).
func purge(ctx context.Context, js jetstream.JetStream, stream string) error {
	msg, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+stream, nil)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return err
	}
	if !resp.Success {
		return fmt.Errorf("purge %s: %s", stream, mustJSON(resp.Error))
	}
	return nil
}

// dlqRuns returns the run ID of each entry `dlq ls --json` printed.
func dlqRuns(t *testing.T, r result) []string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("dlq ls --json: %s", r)
	}
	var entries []struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("dlq ls --json: %v\n%s", err, r.stdout)
	}
	ids := []string{}
	for _, e := range entries {
		ids = append(ids, e.RunID)
	}
	return ids
}
