package nodes_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/nodes"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// TestHTTPNodeThroughAWorker runs http nodes in a real worker: the URL comes from the run
// input by expression, the secret header from an allowed environment variable; the secret
// reaches the API but never the node state, the run view or the DLQ.
func TestHTTPNodeThroughAWorker(t *testing.T) {
	const secret = "sk-live-0123456789abcdef"
	t.Setenv("JETFLOW_TEST_API_KEY", secret)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer "+secret {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/bad") {
			// Echo the credentials back, as careless APIs do.
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"key `+secret+` revoked"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"idem": r.Header.Get("Idempotency-Key"), "got": string(body)})
	}))
	defer api.Close()

	srv := natstest.Start(t)
	names := srv.Setup(t, "jetflow", 2*time.Second)
	_, js := srv.Connect(t)
	ctx := context.Background()
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	def := `name: api
nodes:
  - name: call
    type: http
    retry: {max_attempts: 2, initial: 10ms}
    with:
      method: POST
      url: "${{ input.base }}/${{ input.path }}"
      headers: {Authorization: "Bearer ${{ env.JETFLOW_TEST_API_KEY }}"}
      body: {q: "${{ input.path }}"}
`
	wf, err := workflow.Parse("api.yaml", []byte(def), workflow.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ApplyWorkflow(ctx, wf); err != nil {
		t.Fatal(err)
	}
	w, err := consumer.New(js, store, consumer.Config{Names: names, AllowEnv: []string{"JETFLOW_TEST_API_KEY"}, PollWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nodes.Register(w)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	p := producer.New(js, store, producer.Config{Names: names})
	good, _ := p.Start(ctx, "api", []byte(`{"base":"`+api.URL+`","path":"ok"}`), producer.StartOptions{})
	bad, _ := p.Start(ctx, "api", []byte(`{"base":"`+api.URL+`","path":"bad"}`), producer.StartOptions{})
	wait := func(id string) *checkpoint.End {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		end, err := store.WaitEnd(tctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return end
	}
	if end := wait(good); end.Status != checkpoint.EndCompleted {
		t.Fatalf("good run ended %s (%s)", end.Status, end.Reason)
	}
	view, _ := store.Describe(ctx, good)
	var out struct {
		Status int
		Body   struct{ Idem, Got string }
	}
	if err := json.Unmarshal(view.Nodes["call"].Output, &out); err != nil || out.Status != 200 || out.Body.Idem != good+".call" || out.Body.Got != `{"q":"ok"}` {
		t.Fatalf("output %s", view.Nodes["call"].Output)
	}
	if end := wait(bad); end.Status != checkpoint.EndFailed {
		t.Fatalf("bad run ended %s", end.Status)
	}
	badView, _ := store.Describe(ctx, bad)
	entries, err := dlq.List(ctx, js, names, dlq.Filter{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("DLQ: %v, %d entries", err, len(entries))
	}
	everything, _ := json.Marshal([]any{view, badView, entries, string(entries[0].Body)})
	if strings.Contains(string(everything), secret) {
		t.Fatalf("the secret leaked into the run view or the DLQ: %s", everything)
	}
	if !strings.Contains(badView.Nodes["call"].Error, "401") {
		t.Fatalf("the error does not say 401: %q", badView.Nodes["call"].Error)
	}
}
