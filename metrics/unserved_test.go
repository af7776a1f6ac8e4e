package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/metrics"
	"github.com/jetflow-dev/jetflow/workflow"
)

// The API and the dashboard's run page show a step that could run now, but whose type no
// live worker serves, as pending (no live worker for type T).
func TestUnservedStepIsShown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.worker()
	orphan := workflow.New("orphan")
	orphan.Node("a", typeOK)
	orphan.Node("b", "nobody", "a")
	if err := orphan.Validate(workflow.ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.ApplyWorkflow(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	_, base := f.server(metrics.ServerConfig{})
	id := f.start("orphan")
	var run checkpoint.RunView
	natstest.Eventually(t, 30*time.Second, func() bool {
		getJSON(t, base+"/api/runs/"+id, &run)
		return run.Nodes["a"] != nil && run.Nodes["a"].Status == checkpoint.StatusDone
	}, "node a never ran")
	if b := run.Nodes["b"]; b == nil || b.Status != checkpoint.StatusPending || b.Type != "nobody" || b.Reason != checkpoint.NoWorkerReason("nobody") {
		t.Errorf("/api/runs/%s node b: %+v, want pending with reason %q", id, b, checkpoint.NoWorkerReason("nobody"))
	}
	code, page := get(t, base+"/runs/"+id)
	if code != 200 || !strings.Contains(page, "pending (no live worker for type nobody)") {
		t.Errorf("the run page (%d) does not show b as 'pending (no live worker for type nobody)'", code)
	}
}
