package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/jetflow-dev/jetflow/internal/natstest"
)

// browserToken is the admin token of the browser test's `jetflow dev`.
const browserToken = "browser-test-token"

// chromiumPath returns the Chromium to drive ($CHROMIUM, else chromium or chromium-browser on
// PATH), or skips the test saying how to get one. In CI (CI=true, as .ci/run and most CI
// services set it) a missing Chromium fails the test instead: CI promises the browser test ran.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const missing = "no Chromium found ($CHROMIUM, chromium, chromium-browser); apt-get install chromium, or run scripts/browser-test.sh"
	if os.Getenv("CI") == "true" {
		t.Fatal("browser test cannot run in CI (CI=true): " + missing)
	}
	t.Skip("browser test skipped: " + missing)
	return ""
}

// devProcess is a `jetflow dev` subprocess: the real binary, as a user starts it.
type devProcess struct {
	nats      string // the embedded server's URL
	dashboard string // the dashboard's URL, without the trailing slash
	gateOpen  string // the file that lets the gate workflow's call step pass
	out       *lockedBuffer
}

// startDev runs `jetflow dev` in a temporary directory with the example workflows and `gate`,
// its dashboard on a free loopback port with admin token browserToken, and waits for its
// NATS: and Dashboard: lines. t.Cleanup stops it by PID: SIGINT, then SIGKILL after 20 s.
func startDev(t *testing.T) *devProcess {
	t.Helper()
	dir := t.TempDir()
	wfDir := filepath.Join(dir, "workflows")
	if err := os.Mkdir(wfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example workflows in %s: %v", examplesDir, err)
	}
	for _, f := range examples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(wfDir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &devProcess{gateOpen: filepath.Join(dir, "open"), out: &lockedBuffer{}}
	if err := os.WriteFile(filepath.Join(wfDir, "gate.yaml"), fmt.Appendf(nil, gateYAML, d.gateOpen), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(jetflowBin, "dev", "--data", filepath.Join(dir, "data"), "--workflows", wfDir,
		"--port", "0", "--http", "127.0.0.1:0", "--admin-token", browserToken)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Errorf("jetflow dev (pid %d) did not stop within 20 s of SIGINT: killed", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	natstest.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("jetflow dev exited:\n%s", d.out.String())
		default:
		}
		for _, l := range lines(d.out.String()) {
			if u, ok := strings.CutPrefix(l, "NATS: "); ok {
				d.nats = u
			}
			if u, ok := strings.CutPrefix(l, "Dashboard: "); ok {
				d.dashboard = strings.TrimSuffix(u, "/")
			}
		}
		return d.nats != "" && d.dashboard != ""
	}, "jetflow dev printed no NATS: and Dashboard: lines:\n%s", d.out)
	return d
}

// start starts a run of wf with `jetflow start --wait` and returns its ID and the status
// line it printed.
func (d *devProcess) start(t *testing.T, wf string) (id, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := runCLI(t, ctx, "", "start", wf, "--input", `{"who": "browser"}`, "--wait", "--timeout", "60s", "--nats", d.nats)
	out := lines(r.stdout)
	if len(out) != 2 {
		t.Fatalf("jetflow start %s --wait: %s", wf, r)
	}
	return out[0], out[1]
}

// browser is one headless Chromium tab, with every confirm() dialog accepted.
type browser struct {
	t       *testing.T
	ctx     context.Context
	mu      sync.Mutex
	dialogs []string // the messages of the dialogs accepted
}

// newBrowser starts Chromium at path with a 1280×900 window; t.Cleanup closes it.
func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	// The whole browser session is bounded: a stuck page fails the test, it does not hang it.
	root, cancelRoot := context.WithTimeout(context.Background(), 4*time.Minute)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		cancelTab()
		cancelAlloc()
		cancelRoot()
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	// The page waits while a dialog is open, and so does the click that opened it; this
	// goroutine accepts each, as a user clicking OK.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it
		cancelTab()
		cancelAlloc()
		cancelRoot()
		wg.Wait()
	})
	return b
}

// do runs actions in the tab, failing the test on the first error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text returns the visible text of the first element matching the CSS selector sel; it
// waits for it to appear for at most 30 s.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// waitFor waits until the JavaScript expression js is true in the page, for at most timeout.
func (b *browser) waitFor(timeout time.Duration, js, msg string) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[bool](js,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		flash, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById('flash')?.textContent ?? ''`))
		b.t.Fatalf("%s (waited %s; the page's message: %q): %v", msg, timeout, flash, err)
	}
}

// screenshot saves the whole page, 1280 pixels wide, as dir/name when JETFLOW_SCREENSHOTS=dir.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("JETFLOW_SCREENSHOTS")
	if dir == "" {
		return
	}
	h, err := chromedp.Run(b.ctx, chromedp.Evaluate[int64](`Math.ceil(document.documentElement.scrollHeight)`))
	if err != nil {
		b.t.Fatalf("page height: %v", err)
	}
	// The viewport as tall as the page, so the screenshot has all of it and no scrollbar.
	b.do("resize for the screenshot", chromedp.EmulateViewport(1280, max(h, 600)))
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.do("restore the viewport", chromedp.EmulateViewport(1280, 900))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("saved %s", filepath.Join(dir, name))
}

// TestBrowserDashboard drives headless Chromium through the dashboard of a live `jetflow dev`
// (the real binary), as an operator would: the overview lists a completed and a failed run;
// a click opens the failed run, whose dead node shows its error; Replay is refused without the
// admin token and with a wrong one; with the token typed into the page's form, Replay runs
// the node again and the page itself shows the run completed.
//
// It runs wherever Chromium is found, and skips saying so elsewhere, except in CI (CI=true),
// where it fails. With JETFLOW_SCREENSHOTS=dir it saves dir/dashboard-overview.png and
// dir/dashboard-run.png.
// Not parallel: a browser and a dev server are much of what 2 cores can do.
func TestBrowserDashboard(t *testing.T) {
	path := chromiumPath(t)
	dev := startDev(t)
	completed, st := dev.start(t, "diamond")
	if st != "completed" {
		t.Fatalf("the diamond run %s ended %q, want completed\n%s", completed, st, dev.out)
	}
	failed, st := dev.start(t, "gate")
	if !strings.HasPrefix(st, "failed") {
		t.Fatalf("the gate run %s ended %q, want failed\n%s", failed, st, dev.out)
	}
	b := newBrowser(t, path)

	// The overview lists both runs with their status.
	b.do("load the overview", chromedp.Navigate(dev.dashboard+"/"))
	statusOf := func(id string) string {
		return b.text(`#content tr:has(a[href="/runs/` + id + `"]) .pill`)
	}
	if got := statusOf(completed); got != "completed" {
		t.Errorf("the overview shows run %s %q, want completed", completed, got)
	}
	if got := statusOf(failed); got != "failed" {
		t.Errorf("the overview shows run %s %q, want failed", failed, got)
	}
	if got := b.text(`a.pill.failed`); got != "failed 1" {
		t.Errorf("the overview's failed count reads %q, want \"failed 1\"", got)
	}
	// The worker's presence and the steps of the last minute show within a few live updates.
	b.waitFor(30*time.Second, `(t => t.includes('1 worker online') && !t.includes('warming up'))(document.getElementById('content').textContent)`,
		"the overview never showed the dev worker online and the last minute's activity")
	b.screenshot("dashboard-overview.png")

	// A click on the failed run opens its page.
	if _, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(`#content a[href="/runs/`+failed+`"]`))); err != nil {
		t.Fatalf("click the failed run: %v", err)
	}
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != dev.dashboard+"/runs/"+failed {
		t.Fatalf("the click led to %q (%v), want the run page", loc, err)
	}
	if got := b.text("#run-status"); got != "failed" {
		t.Fatalf("the run page says %q, want failed", got)
	}
	if got := b.text("#node-call .pill"); got != "dead" {
		t.Errorf("node call shows %q, want dead", got)
	}
	if got := b.text("#node-call td.err"); !strings.Contains(got, "403 Forbidden: the gate is closed") {
		t.Errorf("node call's error reads %q, want the gate's message", got)
	}
	b.waitFor(5*time.Second, `document.querySelector('svg.dag g.gnode.s-dead') !== null`, "the graph shows no dead node")
	b.screenshot("dashboard-run.png")

	replay := chromedp.CSS(`#node-call button[data-post="/api/dlq/replay"]`)
	// Without a token the page refuses and sends nothing.
	b.do("click Replay without a token", chromedp.Click(replay))
	b.waitFor(10*time.Second, `document.getElementById('flash').textContent.includes('Enter the admin token first')`,
		"Replay without a token did not ask for the token")
	// With a wrong token the server refuses (401) and the page says so.
	b.do("enter a wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	if got := b.text("#token-state"); got != "token set" {
		t.Fatalf("after entering a token the form says %q, want \"token set\"", got)
	}
	b.do("click Replay with a wrong token", chromedp.Click(replay))
	b.waitFor(10*time.Second, `document.getElementById('flash').textContent.includes('HTTP 401')`,
		"Replay with a wrong token was not refused with 401")
	if got := b.text("#run-status"); got != "failed" {
		t.Fatalf("after the refused replays the run page says %q, want failed", got)
	}

	// The right token, typed as a user would; the gate opens; Replay, confirmed.
	b.do("enter the token", chromedp.SendKeys(chromedp.ID("token"), browserToken),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	if err := os.WriteFile(dev.gateOpen, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.do("click Replay", chromedp.Click(replay))
	b.waitFor(10*time.Second, `document.getElementById('flash').textContent.includes('Replayed')`,
		"Replay with the token did not say it replayed")
	// The page updates itself (Server-Sent Events, every 3 s): no reload.
	b.waitFor(60*time.Second, `document.getElementById('run-status')?.textContent === 'completed'`,
		"the run page never showed the replayed run completed")
	if got := b.text("#node-call .pill"); got != "done" {
		t.Errorf("after the replay node call shows %q, want done", got)
	}
	b.waitFor(5*time.Second, `document.querySelector('svg.dag g.gnode.s-dead') === null`, "the graph still shows a dead node")

	// A run waiting for its approve signal: the run page shows the node waiting, with a form;
	// the data typed into it, sent and confirmed, completes the run with it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := runCLI(t, ctx, "", "start", "approval", "--input", `{"topic": "the browser test"}`, "--nats", dev.nats)
	waiting := strings.TrimSpace(r.stdout)
	if r.code != 0 || waiting == "" {
		t.Fatalf("start approval: %s", r)
	}
	b.do("open the waiting run", chromedp.Navigate(dev.dashboard+"/runs/"+waiting))
	b.waitFor(30*time.Second, `(document.querySelector('#node-approve .pill')?.textContent ?? '') === 'waiting'`,
		"the approval run's page never showed approve waiting")
	if got := b.text("#node-approve td:nth-child(3)"); !strings.Contains(got, "waiting for signal approve") {
		t.Errorf("node approve shows %q, want it waiting for signal approve", got)
	}
	b.do("type the signal's data", chromedp.SendKeys(chromedp.ID("signal-data-approve"), `{"by": "the browser"}`))
	b.screenshot("dashboard-signal.png")
	b.do("click Send approve", chromedp.Click(chromedp.CSS(`#node-approve button[data-post$="/signal/approve"]`)))
	b.waitFor(10*time.Second, `document.getElementById('flash').textContent.includes('Signal sent')`,
		"Send approve did not say it sent the signal")
	b.waitFor(60*time.Second, `document.getElementById('run-status')?.textContent === 'completed'`,
		"the approval run never completed after its signal")

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) != 3 || !strings.HasPrefix(b.dialogs[1], "Replay node call") || !strings.HasPrefix(b.dialogs[2], "Send signal approve") {
		t.Errorf("confirm dialogs %q, want two for the replay and one for the signal", b.dialogs)
	}
}
