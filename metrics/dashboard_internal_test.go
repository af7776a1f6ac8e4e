package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
)

// content renders page's "content" template with data.
func content(t *testing.T, page string, data any) string {
	t.Helper()
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := pages[page].ExecuteTemplate(&b, "content", view{Data: data}); err != nil {
		t.Fatalf("render %s: %v", page, err)
	}
	return b.String()
}

// TestOverviewStepCounts checks how the overview's failure-rate card counts the steps.
func TestOverviewStepCounts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		succeeded, failed int
		want              string
	}{
		{5, 1, "6 steps: 5 succeeded, 1 failed"},
		{1, 0, "1 step: 1 succeeded, 0 failed"},
		{0, 2, "2 steps: 0 succeeded, 2 failed"},
		{0, 0, "no steps finished"},
	} {
		d := &overviewData{Overview: &Overview{Activity: ActivityStats{Succeeded: c.succeeded, Failed: c.failed}}}
		if got := content(t, "overview", d); !strings.Contains(got, `<div class="muted">`+c.want+`</div>`) {
			t.Errorf("%d succeeded, %d failed: the card does not read %q", c.succeeded, c.failed, c.want)
		}
	}
}

// TestRunHeaderTimes checks that the run page shows its start and end the same way.
func TestRunHeaderTimes(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 123e6, time.UTC)
	end := start.Add(32*time.Second + 656*time.Millisecond)
	rv := &checkpoint.RunView{ID: "r", Workflow: "w", Status: "failed", CreatedAt: start, EndedAt: &end}
	d := &runData{Run: &RunDetail{RunView: rv}, Graph: &graph{}, Waterfall: &waterfall{}}
	if got, want := content(t, "run", d), "started 2026-01-02 03:04:05Z · ended 2026-01-02 03:04:37Z"; !strings.Contains(got, want) {
		t.Errorf("the run header does not read %q:\n%s", want, got)
	}
}
