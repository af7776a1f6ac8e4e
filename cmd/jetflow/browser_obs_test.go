package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// chromium returns the headless browser to drive, or skips the test saying why.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("JETFLOW_BROWSER_TEST") != "1" {
		t.Skip("browser test skipped: set JETFLOW_BROWSER_TEST=1 (scripts/browser-test.sh installs Chromium and runs the same steps against jetflow dev)")
	}
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("browser test skipped: no chromium on PATH (apt-get install chromium, or run scripts/browser-test.sh)")
	return ""
}

// dumpDOM loads url in headless Chromium, lets its scripts run, and returns the DOM.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--window-size=1280,900", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", url, err)
	}
	return string(out)
}

// replayButton finds the DLQ ID of the Replay button on a run page, as the dashboard's
// script reads it from data-body.
var replayButton = regexp.MustCompile(`data-post="/api/dlq/replay" data-body="[^"]*?(\d+)\]`)

// TestBrowserDashboard loads the dashboard in headless Chromium: it sees a completed and a
// failed run, opens the failed run, replays its DLQ entry with the token as the dashboard
// does, and sees the run complete.
func TestBrowserDashboard(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	e := newObsEnv(t, httpFlags{addr: "127.0.0.1:0", adminToken: obsToken})
	completed, failed := e.start("diamond"), e.start("gate")
	e.waitEnd(completed, checkpoint.EndCompleted)
	e.waitEnd(failed, checkpoint.EndFailed)

	dom := dumpDOM(t, browser, e.base+"/")
	for _, id := range []string{completed, failed} {
		if !strings.Contains(dom, id) {
			t.Fatalf("the overview does not show run %s", id)
		}
	}
	dom = dumpDOM(t, browser, e.base+"/runs?status=failed")
	if !strings.Contains(dom, failed) || strings.Contains(dom, completed) {
		t.Fatalf("the failed-runs list is wrong:\n%s", dom)
	}

	dom = dumpDOM(t, browser, e.base+"/runs/"+failed)
	if !strings.Contains(dom, `gnode s-dead`) || !strings.Contains(dom, "403 Forbidden: the gate is closed") {
		t.Fatalf("the failed run's page shows no dead node with its error:\n%s", dom)
	}
	if !strings.Contains(dom, `id="token-form"`) {
		t.Fatalf("the page offers no admin token field")
	}
	m := replayButton.FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the failed run's page has no Replay button:\n%s", dom)
	}

	// Open the gate, then replay as the dashboard's script does: POST, Bearer token, and the
	// headers a browser adds to a same-origin fetch.
	if err := os.WriteFile(e.gateOpen, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	body := `{"ids":[` + m[1] + `]}`
	same := map[string]string{"Origin": e.base, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
	if code, _ := e.httpDo(http.MethodPost, "/api/dlq/replay", body, same); code != http.StatusUnauthorized {
		t.Fatalf("a replay without the token answered %d, want 401", code)
	}
	same["Authorization"] = "Bearer " + obsToken
	if code, resp := e.httpDo(http.MethodPost, "/api/dlq/replay", body, same); code != http.StatusOK {
		t.Fatalf("replay: %d %s", code, resp)
	}
	e.waitEnd(failed, checkpoint.EndCompleted)
	natstest.Eventually(t, 30*time.Second, func() bool {
		dom = dumpDOM(t, browser, e.base+"/runs/"+failed)
		return strings.Contains(dom, `id="run-status">completed<`)
	}, "the replayed run's page does not show it completed")
	if strings.Contains(dom, "gnode s-dead") {
		t.Errorf("the replayed run still shows a dead node")
	}
}
