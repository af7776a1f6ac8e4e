package consumer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

const subprocessEnv = "JETFLOW_TEST_WORKER"

// subprocessWorker runs a worker in this process (the test binary re-executed) until SIGTERM,
// with the handlers of the named mode. NATS_URL and JETFLOW_LEDGER say where to connect and
// what to append to.
func subprocessWorker(mode string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names := workflow.MustNames("jetflow")
	store, err := checkpoint.Open(ctx, js, names)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w, err := New(js, store, Config{Names: names, PollWait: 200 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ledger := os.Getenv("JETFLOW_LEDGER")
	note := func(format string, args ...any) {
		f, err := os.OpenFile(ledger, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, format+"\n", args...)
			f.Close()
		}
	}
	switch mode {
	case "items":
		// Processes items 1..100, saving progress every 10; on its first run it hangs after
		// item 55 so the test can kill the process there.
		w.Handle("items", func(ctx context.Context, s *Step) (any, error) {
			var p struct{ Next int }
			if err := s.Progress(ctx, &p); errors.Is(err, ErrNoProgress) {
				p.Next = 1
			} else if err != nil {
				return nil, err
			}
			note("start %d pid %d", p.Next, os.Getpid())
			for i := p.Next; i <= 100; i++ {
				note("item %d", i)
				if i == 55 {
					if _, err := os.Stat(ledger + ".hung"); err != nil {
						_ = os.WriteFile(ledger+".hung", nil, 0o644)
						<-ctx.Done() // killed here
						return nil, ctx.Err()
					}
				}
				if i%10 == 0 {
					if err := s.SaveProgress(ctx, struct{ Next int }{i + 1}); err != nil {
						return nil, err
					}
				}
			}
			return "all 100 items", nil
		})
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 2
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startSubprocessWorker runs this test binary as a worker process; it is killed at test end.
func (f *fixture) startSubprocessWorker(mode, ledger string) *exec.Cmd {
	f.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), subprocessEnv+"="+mode, "NATS_URL="+f.srv.ClientURL(), "JETFLOW_LEDGER="+ledger)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// TestResumeFromSavedProgress: a handler saving progress every 10 items is killed (its worker
// process SIGKILLed) after item 55; the next attempt starts from item 51, not 1.
func TestResumeFromSavedProgress(t *testing.T) {
	t.Parallel()
	f := setup(t, "items")
	wf := workflow.New("batch")
	wf.Node("process", "items")
	f.apply(wf)
	ledger := filepath.Join(t.TempDir(), "ledger")
	first := f.startSubprocessWorker("items", ledger)
	id := f.start("batch", `{}`)
	natstest.Eventually(t, 30*time.Second, func() bool {
		for _, l := range readLines(ledger) {
			if l == "item 55" {
				return true
			}
		}
		return false
	}, "the handler never reached item 55")
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	f.startSubprocessWorker("items", ledger)
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	var starts []string
	count := map[string]int{}
	for _, l := range readLines(ledger) {
		if strings.HasPrefix(l, "start ") {
			starts = append(starts, strings.Fields(l)[1])
		} else {
			count[l]++
		}
	}
	if len(starts) != 2 || starts[0] != "1" || starts[1] != "51" {
		t.Fatalf("attempts started at %v, want [1 51]", starts)
	}
	if count["item 1"] != 1 || count["item 50"] != 1 || count["item 51"] != 2 || count["item 100"] != 1 {
		t.Fatalf("items run: 1×%d 50×%d 51×%d 100×%d; want 1, 1, 2, 1", count["item 1"], count["item 50"], count["item 51"], count["item 100"])
	}
	// The progress is gone once the node is done.
	if _, err := f.store.KV().Get(context.Background(), workflow.ProgressKey(id, "process")); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Fatalf("progress key still there after completion: %v", err)
	}
}

// The progress key of a completed node is deleted even when the attempt that completed it
// never touched progress (an earlier attempt saved it), and even when the worker that wrote
// done died before deleting it (the redelivery deletes it).
func TestProgressDroppedWhenTheNodeCompletes(t *testing.T) {
	t.Parallel()
	f := setup(t, "saver")
	wf := workflow.New("saves")
	wf.Node("a", "saver").WithRetry(workflow.Retry{MaxAttempts: 3, Initial: workflow.Duration(10 * time.Millisecond)})
	f.apply(wf)
	kv := f.store.KV()
	progressLeft := func(id string) bool {
		_, err := kv.Get(context.Background(), workflow.ProgressKey(id, "a"))
		return err == nil
	}
	// Attempt 1 saves progress and fails; attempt 2 succeeds without reading it.
	handler := func(ctx context.Context, s *Step) (any, error) {
		if s.Attempt == 1 {
			if err := s.SaveProgress(ctx, map[string]int{"next": 7}); err != nil {
				return nil, err
			}
			return nil, errors.New("flaky")
		}
		if strings.Contains(string(s.Input), "die") {
			if err := s.SaveProgress(ctx, map[string]int{"next": 8}); err != nil {
				return nil, err
			}
		}
		return "ok", nil
	}
	var died atomic.Bool
	var nc1 *nats.Conn
	_, nc1, _ = f.worker(Config{hook: func(point string) bool {
		if point != pointDoneWritten || !died.CompareAndSwap(false, true) {
			return false
		}
		nc1.Close() // dies after writing done, before deleting the progress
		return true
	}}, func(w *Worker) { w.Handle("saver", handler) })

	dying := f.start("saves", `{"die": true}`)
	natstest.Eventually(t, 20*time.Second, died.Load, "the worker never reached %s", pointDoneWritten)
	if !progressLeft(dying) {
		t.Fatal("the dying worker deleted the progress before the crash point")
	}
	f.worker(Config{}, func(w *Worker) { w.Handle("saver", handler) })
	if end := f.waitEnd(dying, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return !progressLeft(dying) }, "the redelivery did not delete the progress left by the crash")

	quiet := f.start("saves", `{}`)
	if end := f.waitEnd(quiet, 30*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s (%s)", end.Status, end.Reason)
	}
	if progressLeft(quiet) {
		t.Fatal("progress saved by attempt 1 outlived the node's completion by attempt 2")
	}
}
