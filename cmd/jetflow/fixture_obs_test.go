package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
)

// obsToken is the admin token of the observability tests' servers.
const obsToken = "obs-test-token"

// obsEnv is a NATS server set up for jetflow with the example workflows and `gate` applied,
// a worker with the built-in types wired as `jetflow worker --http` wires it (newObs,
// observer, attach, start), and its dashboard.
type obsEnv struct {
	t        *testing.T
	srv      *natstest.Server
	c        *conn
	app      *app
	out      *lockedBuffer
	obs      *obs
	base     string // the dashboard's URL, without the trailing slash
	gateOpen string // the file that lets the gate workflow's call step pass
	draining atomic.Bool
}

// gateYAML is a workflow whose middle step fails permanently until the file %s exists.
const gateYAML = `name: gate
nodes:
  - name: prepare
    type: noop
  - name: call
    type: exec
    needs: [prepare]
    with:
      permanent_exit_codes: [3]
      command: |
        if [ ! -f %q ]; then
          echo "403 Forbidden: the gate is closed" >&2
          exit 3
        fi
        echo '{"passed": true}'
  - name: report
    type: noop
    needs: [call]
`

func newObsEnv(t *testing.T, h httpFlags) *obsEnv {
	t.Helper()
	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 5*time.Second)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &obsEnv{t: t, srv: srv, c: &conn{nc: nc, js: js, store: store, names: names}, out: &lockedBuffer{},
		gateOpen: filepath.Join(dir, "open")}
	e.app = &app{stdin: strings.NewReader(""), stdout: e.out, stderr: e.out, natsURL: srv.ClientURL(), prefix: names.Prefix()}
	gate := filepath.Join(dir, "gate.yaml")
	if err := os.WriteFile(gate, fmt.Appendf(nil, gateYAML, e.gateOpen), 0o644); err != nil {
		t.Fatal(err)
	}
	wfs, err := parseFiles([]string{examplesDir, gate})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wfs {
		if _, _, err := store.ApplyWorkflow(ctx, w); err != nil {
			t.Fatal(err)
		}
	}

	// The worker, wired as runWorker wires it.
	e.obs, err = e.app.newObs(e.c, h, 4, e.draining.Load, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := consumer.Config{Names: names, Concurrency: 4, DrainTimeout: 5 * time.Second, PollWait: 200 * time.Millisecond,
		Observer: e.obs.observer(), Logger: e.app.logger(), Version: version}
	w, err := consumer.New(js, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes.Register(w)
	e.obs.attach(w)
	stop := e.obs.start()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		e.draining.Store(true)
		cancel()
		// A worker stopped while it still starts says so: that is fine here.
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker: %v", err)
		}
		stop()
	})
	e.base = strings.TrimSuffix(e.obs.url(), "/")
	return e
}

// start starts a run of wf and returns its ID.
func (e *obsEnv) start(wf string) string {
	e.t.Helper()
	p := producer.New(e.c.js, e.c.store, producer.Config{Names: e.c.names})
	id, err := p.Start(context.Background(), wf, []byte(`{"who": "test"}`), producer.StartOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// waitEnd waits for run id to end with status want.
func (e *obsEnv) waitEnd(id, want string) {
	e.t.Helper()
	var got string
	natstest.Eventually(e.t, 30*time.Second, func() bool {
		end, _, err := e.c.store.End(context.Background(), id)
		if err == nil && end != nil {
			got = end.Status
		}
		return got == want
	}, "run %s did not end %s (got %q)", id, want, got)
}

// httpDo sends one request to the dashboard and returns the status and body.
func (e *obsEnv) httpDo(method, path, body string, header map[string]string) (int, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
