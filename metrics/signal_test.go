package metrics_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
)

// POST /api/runs/{id}/signal/{name} sends a signal with the body as its data (admin token
// only); a second one is 409, an unknown run 404; the run page shows the node waiting.
func TestAPISignal(t *testing.T) {
	f := setup(t)
	f.worker()
	id := f.start("gate")
	natstest.Eventually(t, 30*time.Second, func() bool {
		st, _, err := f.store.Node(context.Background(), id, "g")
		return err == nil && st != nil && st.Status == checkpoint.StatusWaiting
	}, "g never waited")
	_, base := f.server(metrics.ServerConfig{AdminToken: "tok"})
	_, body := get(t, base+"/runs/"+id)
	if !strings.Contains(body, "waiting for signal <b>approve</b>") {
		t.Errorf("the run page does not show the node waiting for its signal")
	}
	if !strings.Contains(body, `data-post="/api/runs/`+id+`/signal/approve"`) || !strings.Contains(body, `data-body-from="#signal-data-g"`) {
		t.Errorf("the run page has no form to send the signal")
	}
	admin := map[string]string{"Authorization": "Bearer tok"}
	url := base + "/api/runs/" + id + "/signal/approve"
	if code, _ := do(t, request{method: http.MethodPost, url: url, body: `{"ok": true}`}); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("a signal without the token = %d, want 401 or 403", code)
	}
	if code, body := do(t, request{method: http.MethodPost, url: url, body: `{"ok": true}`, header: admin}); code != http.StatusOK || !strings.Contains(body, `"sent": true`) {
		t.Fatalf("signal: %d %s", code, body)
	}
	if code, body := do(t, request{method: http.MethodPost, url: url, header: admin}); code != http.StatusConflict || !strings.Contains(body, "already signalled") && !strings.Contains(body, "ended") {
		t.Errorf("second signal: %d %s, want 409", code, body)
	}
	if code, _ := do(t, request{method: http.MethodPost, url: base + "/api/runs/" + id + "/signal/approve", body: "{nope", header: admin}); code != http.StatusBadRequest {
		t.Errorf("bad data = %d, want 400", code)
	}
	f.waitEnd(id, checkpoint.EndCompleted)
	st, _, _ := f.store.Node(context.Background(), id, "g")
	if string(st.Output) != `{"ok":true}` {
		t.Errorf("g's output %s, want the signal's data", st.Output)
	}
}
