//go:build linux

package chaos

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/internal/natstest"
	jsetup "github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// ackWait is the exec consumer's ack wait in every scenario (`setup --type exec --ack-wait`):
// short, so that a killed or stopped worker's steps come back within seconds.
const ackWait = 2 * time.Second

// tol absorbs the difference between the ledger's clock reads (a `date` in the node's shell)
// and the test's, when ordering a fault against a handler run.
const tol = 250 * time.Millisecond

// fault kinds.
const (
	faultWorkerKill = "worker SIGKILL"
	faultWorkerStop = "worker SIGSTOP"
	faultWorkerDied = "worker died" // not by the test's hand: a poison step killed it
	faultServerKill = "nats-server SIGKILL"
	faultLeaderKill = "steps leader SIGKILL"
	faultDuplicate  = "duplicate publish"
	// The runs bucket refuses every write for a while: it explains no re-run, since a
	// broker error hands a step back marked, and a handler's result is held through it.
	faultRunsOutage = "runs bucket refuses writes"
)

// fault is one injected (or observed) fault.
type fault struct {
	kind  string
	pid   int       // the worker's or the server's
	at    time.Time // when the signal was sent (or the death seen)
	until time.Time // worker stop: SIGCONT; server kill: back up
	key   string    // duplicate publish: the step's idempotency key
	note  string    // worker died: how, and its last log lines
}

// isWorker reports whether f took a worker process away.
func (f fault) isWorker() bool {
	return f.kind == faultWorkerKill || f.kind == faultWorkerStop || f.kind == faultWorkerDied
}

// isServer reports whether f took a nats-server away.
func (f fault) isServer() bool { return f.kind == faultServerKill || f.kind == faultLeaderKill }

// freePorts reserves n free loopback ports (released before use: good enough on one machine).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// proc is a subprocess the test started: a nats-server or a worker.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once Wait returned
	err  error         // Wait's error, once done is closed
	// byTest is set before the test signals the process to die, so its death is not taken
	// for a poison step's doing.
	byTest atomic.Bool
}

// startProc starts argv with its output appended to logPath. Pdeathsig makes the process
// die with the test binary (a test timeout panics it), so nothing outlives a test run.
func startProc(logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// A file, not a pipe: no copying goroutine, and nothing for an orphan to hold open.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process (by PID) if it still runs.
func (p *proc) signal(sig syscall.Signal) {
	if p.alive() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill SIGKILLs the process and waits (bounded) for it to be reaped.
func (p *proc) kill() error {
	p.byTest.Store(true)
	p.signal(syscall.SIGCONT) // a stopped process dies of SIGKILL too, but be plain about it
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("pid %d did not die within 30 s of SIGKILL", p.pid())
	}
}

// stop asks the process to end (SIGTERM), and SIGKILLs it after grace.
func (p *proc) stop(grace time.Duration) (clean bool) {
	p.byTest.Store(true)
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err == nil
	case <-time.After(grace):
	}
	_ = p.kill()
	return false
}

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// lastLines returns the last n lines of the process's log that are not debug lines, on one line.
func (p *proc) lastLines(n int) string {
	var keep []string
	for _, l := range strings.Split(p.tail(64<<10), "\n") {
		if l != "" && !strings.Contains(l, "level=DEBUG") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, " | ")
}

// natsProc is one nats-server process, restartable on the same ports and store.
type natsProc struct {
	name        string
	port        int
	clusterPort int   // 0: single node
	routes      []int // cluster ports of every node
	store, conf string
	logPath     string

	mu sync.Mutex
	p  *proc
}

func (n *natsProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsProc) writeConf() error {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", n.name, n.port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", n.store)
	if n.clusterPort != 0 {
		fmt.Fprintf(&b, "cluster {\n  name: chaos\n  listen: 127.0.0.1:%d\n  routes: [\n", n.clusterPort)
		for _, r := range n.routes {
			fmt.Fprintf(&b, "    nats-route://127.0.0.1:%d\n", r)
		}
		b.WriteString("  ]\n}\n")
	}
	return os.WriteFile(n.conf, []byte(b.String()), 0o644)
}

func (n *natsProc) start() error {
	p, err := startProc(n.logPath, os.Environ(), natsBin, "-c", n.conf)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.p = p
	n.mu.Unlock()
	return nil
}

func (n *natsProc) proc() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p
}

// waitListening waits until the server accepts connections on its client port.
func (n *natsProc) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p := n.proc(); p != nil && !p.alive() {
			return fmt.Errorf("nats-server %s exited: %w\n%s", n.name, p.err, p.tail(2000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s does not listen on %d after %s", n.name, n.port, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// worker is one `jetflow worker` process.
type worker struct {
	*proc
	n int // its number in the scenario, for log names
}

// runRef is a run the scenario started, and what it expects of it.
type runRef struct {
	id, workflow string
	// deadNode, when set, is the node the scenario expects in the DLQ (the run fails);
	// otherwise the run must complete.
	deadNode string
}

// rig is one scenario's world: servers, workers, the ledger and the fault log.
type rig struct {
	t       *testing.T
	opts    rigOptions
	name    string
	dir     string
	tag     string // in every worker's environment, and so in every exec node's
	prefix  string
	names   workflow.Names
	servers []*natsProc
	nc      *nats.Conn
	js      jetstream.JetStream
	kv      jetstream.KeyValue // the runs bucket
	ledger  string
	script  string
	began   time.Time
	ctx     context.Context // ends when the test ends

	mu        sync.Mutex
	faults    []fault
	workers   []*worker // every worker started
	pool      []*worker // the slots keepWorkers keeps filled
	runs      []runRef
	nworkers  int
	stopKeep  func()
	hangNodes map[string]bool // node names whose first run hangs on purpose
	// poison is set when the scenario runs a step that kills its worker: only then is a
	// worker's death not a problem.
	poison bool
	hit    map[string]bool // steps a worker fault interrupted (see victim)
}

var prefixChars = regexp.MustCompile(`[^a-z0-9_-]+`)

// rigOptions choose the broker and the workers.
type rigOptions struct {
	cluster     bool // three nats-server nodes, streams and buckets at R3
	concurrency int  // each worker's --concurrency (default 8)
}

// newRig starts the servers, runs `jetflow setup`, and registers the cleanup that stops
// everything the scenario started, by PID.
func newRig(t *testing.T, name string, o rigOptions) *rig {
	t.Helper()
	trackSources()
	ctx, cancel := context.WithCancel(context.Background())
	var tag [6]byte
	_, _ = rand.Read(tag[:])
	r := &rig{
		t:         t,
		opts:      o,
		name:      name,
		dir:       t.TempDir(),
		tag:       hex.EncodeToString(tag[:]),
		prefix:    "chaos-" + strings.Trim(prefixChars.ReplaceAllString(strings.ToLower(name), "-"), "-"),
		began:     time.Now(),
		ctx:       ctx,
		hangNodes: map[string]bool{},
	}
	r.names = workflow.MustNames(r.prefix)
	r.ledger = filepath.Join(r.dir, "ledger")
	r.script = filepath.Join(r.dir, "node.sh")
	if err := os.WriteFile(r.script, []byte(nodeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		r.cleanup()
	})

	n := 1
	if o.cluster {
		n = 3
	}
	ports := freePorts(t, 2*n)
	for i := range n {
		s := &natsProc{
			name:    fmt.Sprintf("n%d", i+1),
			port:    ports[i],
			store:   filepath.Join(r.dir, fmt.Sprintf("store-n%d", i+1)),
			conf:    filepath.Join(r.dir, fmt.Sprintf("n%d.conf", i+1)),
			logPath: filepath.Join(r.dir, fmt.Sprintf("nats-n%d.log", i+1)),
		}
		if o.cluster {
			s.clusterPort = ports[n+i]
			s.routes = ports[n:]
		}
		if err := s.writeConf(); err != nil {
			t.Fatal(err)
		}
		if err := s.start(); err != nil {
			t.Fatal(err)
		}
		r.servers = append(r.servers, s)
	}
	for _, s := range r.servers {
		if err := s.waitListening(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := nats.Connect(r.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Name("chaos test"))
	if err != nil {
		t.Fatal(err)
	}
	r.nc = nc
	if r.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}

	// jetflow setup through the CLI, retried while a cluster elects its meta leader: one call
	// with every flag (setup used to put what it was not given back to its default: see
	// RELIABILITY.md, "Findings", and TestBugSetup… in bugs_test.go).
	setup := []string{"setup", "--type", "exec", "--ack-wait", ackWait.String()}
	if o.cluster {
		setup = append(setup, "--replicas", "3")
	}
	r.retryCLI(90*time.Second, setup...)
	// Instrumentation: keep the history of every key of the runs bucket (KV history 64,
	// setup makes it 1), so the check can count how many times each node state became done.
	// jetflow reads only the latest revision, so this changes nothing it does.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	st, err := r.js.Stream(sctx, "KV_"+r.names.RunsBucket())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if want := len(r.servers); cfg.Replicas != want {
		t.Fatalf("%s has %d replicas after setup, want %d", cfg.Name, cfg.Replicas, want)
	}
	cfg.MaxMsgsPerSubject = 64
	if _, err := r.js.UpdateStream(sctx, cfg); err != nil {
		t.Fatalf("keep the history of %s: %v", r.names.RunsBucket(), err)
	}
	if r.kv, err = r.js.KeyValue(sctx, r.names.RunsBucket()); err != nil {
		t.Fatal(err)
	}
	return r
}

// urls is the comma-separated client URL list of every server.
func (r *rig) urls() string {
	var us []string
	for _, s := range r.servers {
		us = append(us, s.url())
	}
	return strings.Join(us, ",")
}

// cleanup ends every process the scenario started: workers (SIGCONT, SIGTERM, then SIGKILL),
// then exec processes still carrying the scenario's tag (by PID), then the servers.
func (r *rig) cleanup() {
	if r.stopKeep != nil {
		r.stopKeep()
	}
	r.mu.Lock()
	ws := slices.Clone(r.workers)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.stop(20 * time.Second) })
	}
	wg.Wait()
	if left := r.killTagged(); len(left) > 0 {
		r.t.Logf("killed %d leftover exec processes: %v", len(left), left)
	}
	if r.nc != nil {
		r.nc.Close()
	}
	for _, s := range r.servers {
		if p := s.proc(); p != nil {
			p.stop(20 * time.Second)
		}
	}
	if r.t.Failed() {
		for _, w := range ws {
			r.t.Logf("worker %d (pid %d) log tail:\n%s", w.n, w.pid(), w.tail(3000))
		}
		for _, s := range r.servers {
			if p := s.proc(); p != nil {
				r.t.Logf("nats-server %s log tail:\n%s", s.name, p.tail(2000))
			}
		}
	}
}

// tagged lists the processes (other than the workers) whose environment carries the
// scenario's tag: exec nodes and their children.
func (r *rig) tagged() []int {
	want := []byte("JETFLOW_CHAOS=" + r.tag + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if r.isWorkerPID(pid) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

func (r *rig) isWorkerPID(pid int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		if w.pid() == pid && w.alive() {
			return true
		}
	}
	return false
}

// killTagged SIGKILLs, by PID, every leftover exec process of the scenario.
func (r *rig) killTagged() []int {
	pids := r.tagged()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return pids
}

// cli runs the jetflow binary against the scenario's servers and prefix.
func (r *rig) cli(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, jetflowBin, append(args, "--nats", r.urls(), "--prefix", r.prefix)...)
	cmd.Env = append(os.Environ(), "NATS_URL=", "JETFLOW_PREFIX=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	}
	return o.String(), e.String(), code
}

// retryCLI runs a command until it exits 0, failing the test after timeout.
func (r *rig) retryCLI(timeout time.Duration, args ...string) string {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, errOut, code := r.cli(30*time.Second, args...)
		if code == 0 {
			return out
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("jetflow %s: exit %d after %s of retries: %s%s", strings.Join(args, " "), code, timeout, out, errOut)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fault records f.
func (r *rig) fault(f fault) {
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
}

// faultLog returns a copy of the faults so far.
func (r *rig) faultLog() []fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.faults)
}

// startWorker starts one `jetflow worker` process.
func (r *rig) startWorker() (*worker, error) {
	r.mu.Lock()
	r.nworkers++
	n := r.nworkers
	r.mu.Unlock()
	env := append(os.Environ(), "NATS_URL=", "JETFLOW_PREFIX=", "JETFLOW_CHAOS="+r.tag)
	p, err := startProc(filepath.Join(r.dir, fmt.Sprintf("worker-%d.log", n)), env,
		jetflowBin, "worker", "--nats", r.urls(), "--prefix", r.prefix,
		"--concurrency", strconv.Itoa(cmp.Or(r.opts.concurrency, 8)), "--drain-timeout", "2s", "-v")
	if err != nil {
		return nil, err
	}
	w := &worker{proc: p, n: n}
	r.mu.Lock()
	r.workers = append(r.workers, w)
	r.mu.Unlock()
	return w, nil
}

// startHangWorker starts the hang worker (node type "hang", whose handler ignores its
// context on a step's first run for hang), after creating the type's consumer with the
// suite's ack wait.
func (r *rig) startHangWorker(hang time.Duration) *worker {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	// Through the library, as setup does it: the rig's CLI setup already named exec.
	if err := jsetup.EnsureConsumer(ctx, r.js, r.names, jsetup.ConsumerConfig{Type: "hang", AckWait: ackWait}, true, len(r.servers), nil); err != nil {
		r.t.Fatal(err)
	}
	markers := filepath.Join(r.dir, "markers")
	if err := os.MkdirAll(markers, 0o755); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.nworkers++
	n := r.nworkers
	r.mu.Unlock()
	p, err := startProc(filepath.Join(r.dir, fmt.Sprintf("hangworker-%d.log", n)), append(os.Environ(), "JETFLOW_CHAOS="+r.tag),
		hangBin, "-nats", r.urls(), "-prefix", r.prefix, "-ledger", r.ledger, "-markers", markers, "-hang", hang.String())
	if err != nil {
		r.t.Fatal(err)
	}
	w := &worker{proc: p, n: n}
	r.mu.Lock()
	r.workers = append(r.workers, w)
	r.mu.Unlock()
	return w
}

// keepWorkers keeps n workers running until the scenario's check: a worker that dies is
// replaced at once; a death the test did not cause is recorded as a fault (a poison step).
func (r *rig) keepWorkers(n int) {
	r.t.Helper()
	for range n {
		w, err := r.startWorker()
		if err != nil {
			r.t.Fatal(err)
		}
		r.mu.Lock()
		r.pool = append(r.pool, w)
		r.mu.Unlock()
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r.mu.Lock()
			pool := slices.Clone(r.pool)
			r.mu.Unlock()
			for i, w := range pool {
				if w.alive() {
					continue
				}
				if !w.byTest.Load() {
					r.fault(fault{kind: faultWorkerDied, pid: w.pid(), at: time.Now(),
						note: fmt.Sprintf("worker %d (pid %d) exited: %v; log: %s", w.n, w.pid(), w.err, w.lastLines(4))})
				}
				nw, err := r.startWorker()
				if err != nil {
					r.t.Errorf("restart worker: %v", err)
					return
				}
				r.mu.Lock()
				r.pool[i] = nw
				r.mu.Unlock()
			}
		}
	}()
	var once sync.Once
	r.stopKeep = func() {
		once.Do(func() {
			close(stop)
			<-done
		})
	}
}

// killWorker SIGKILLs w and records the fault.
func (r *rig) killWorker(w *worker) {
	w.byTest.Store(true)
	r.fault(fault{kind: faultWorkerKill, pid: w.pid(), at: time.Now()})
	if err := w.kill(); err != nil {
		r.t.Error(err)
	}
}

// stopWorker SIGSTOPs w for d, then SIGCONTs it: a zombie that wakes up.
func (r *rig) stopWorker(w *worker, d time.Duration) {
	at := time.Now()
	w.signal(syscall.SIGSTOP)
	select {
	case <-time.After(d):
	case <-r.ctx.Done():
	}
	w.signal(syscall.SIGCONT)
	r.fault(fault{kind: faultWorkerStop, pid: w.pid(), at: at, until: time.Now()})
}

// victim picks the worker a fault should hit: a live worker that runs handlers now (from
// the ledger), none of them of a step a fault already interrupted; else, when idle is set,
// any live worker that runs no such step; else nil. It marks the steps it hits: a step hit
// again and again by the test's own faults would rightly go to the DLQ ("worker crashed or
// timed out N times"), which is not what the scenarios are about. A step already hit that a
// worker holds before its handler started is not in the ledger yet, but its node state
// (marked running on its redelivery, crashes counted) names the worker: such a worker is
// spared too.
func (r *rig) victim(idle bool) *worker {
	holding := r.holdingHitSteps()
	evs, _ := readLedger(r.ledger)
	type run struct {
		key  string
		ppid int
	}
	open := map[int]run{} // shell pid → its step and worker, for runs with no end yet
	for _, e := range evs {
		switch e.ev {
		case evStart:
			open[e.pid] = run{e.key, e.ppid}
		default:
			delete(open, e.pid)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hit == nil {
		r.hit = map[string]bool{}
	}
	var busy, calm []*worker
	for _, w := range r.pool {
		if !w.alive() || w.byTest.Load() {
			continue
		}
		runs, rehit := 0, false
		for _, o := range open {
			if o.ppid == w.pid() {
				runs++
				rehit = rehit || r.hit[o.key]
			}
		}
		switch {
		case rehit, holding[w.pid()]:
		case runs > 0:
			busy = append(busy, w)
		default:
			calm = append(calm, w)
		}
	}
	var w *worker
	switch {
	case len(busy) > 0:
		w = busy[randN(len(busy))]
	case idle && len(calm) > 0:
		w = calm[randN(len(calm))]
	default:
		return nil
	}
	for _, o := range open {
		if o.ppid == w.pid() {
			r.hit[o.key] = true
		}
	}
	return w
}

// holdingHitSteps returns the PIDs of the workers named by a running node state that has
// crashes counted: each holds a step a fault already interrupted. Worker IDs end in
// -<pid>-<random>.
func (r *rig) holdingHitSteps() map[int]bool {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	out := map[int]bool{}
	_ = kvwatch.Scan(ctx, r.kv, []string{workflow.NodeKey("*", "*")}, func(e jetstream.KeyValueEntry) error {
		var st checkpoint.Node
		if json.Unmarshal(e.Value(), &st) != nil || st.Status != checkpoint.StatusRunning || st.Crashes == 0 {
			return nil
		}
		if parts := strings.Split(st.Worker, "-"); len(parts) >= 3 {
			if pid, err := strconv.Atoi(parts[len(parts)-2]); err == nil {
				out[pid] = true
			}
		}
		return nil
	})
	return out
}

// killServer SIGKILLs server i, leaves it down for down, and starts it again on the same
// store; kind says what the server was (any node, or the steps stream's leader).
func (r *rig) killServer(i int, down time.Duration, kind string) error {
	s := r.servers[i]
	p := s.proc()
	at := time.Now()
	if err := p.kill(); err != nil {
		return err
	}
	select {
	case <-time.After(down):
	case <-r.ctx.Done():
	}
	if err := s.start(); err != nil {
		return err
	}
	if err := s.waitListening(60 * time.Second); err != nil {
		return err
	}
	r.fault(fault{kind: kind, pid: p.pid(), at: at, until: time.Now()})
	return nil
}

// stepsLeader returns the index of the server that leads the steps stream.
func (r *rig) stepsLeader() (int, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, r.names.StepsStream())
	if err != nil {
		return -1, err
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return -1, errors.New("the steps stream has no cluster info")
	}
	for i, n := range r.servers {
		if n.name == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("leader %q is none of the servers", info.Cluster.Leader)
}

// startRuns starts n runs of wf, one every gap, through `jetflow start --id` (retried with
// the same ID until it succeeds: a start is idempotent). deadNode marks the runs expected
// to fail with that node in the DLQ.
func (r *rig) startRuns(wf string, n int, gap time.Duration, deadNode string) {
	for i := range n {
		if r.ctx.Err() != nil {
			return
		}
		id := fmt.Sprintf("%s-%03d", wf, i)
		deadline := time.Now().Add(90 * time.Second)
		for {
			_, errOut, code := r.cli(30*time.Second, "start", wf, "--id", id, "--input", fmt.Sprintf(`{"i":%d}`, i))
			if code == 0 {
				break
			}
			if time.Now().After(deadline) || r.ctx.Err() != nil {
				r.t.Errorf("start %s: exit %d for 90 s: %s", id, code, errOut)
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		r.mu.Lock()
		r.runs = append(r.runs, runRef{id: id, workflow: wf, deadNode: deadNode})
		r.mu.Unlock()
		if gap > 0 {
			time.Sleep(gap)
		}
	}
}

// every calls f every d (a few times, until n calls or the deadline), in a goroutine; wait
// blocks until the loop ended.
func every(d time.Duration, n int, deadline time.Time, f func(i int)) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			time.Sleep(d)
			if time.Now().After(deadline) {
				return
			}
			f(i)
		}
	}()
	return func() { <-done }
}

// dupPublisher re-publishes step messages with Nats-Msg-Ids of its own, so the steps stream
// stores them again: the duplicates a client retry with a fresh ID, or a second producer,
// would make. It reads what is published on the step subjects (a core subscription sees
// every step a producer or worker publishes, envelope and headers as sent).
type dupPublisher struct {
	r     *rig
	sub   *nats.Subscription
	wg    sync.WaitGroup
	n     atomic.Int64
	errs  atomic.Int64
	seen  atomic.Int64
	max   int64
	share int // percent of steps duplicated
}

const dupIDPrefix = "chaos-dup-"

// duplicateSteps starts duplicating share percent of the steps (at most max), each after a
// random delay up to maxDelay (some race the original, some come after its result).
func (r *rig) duplicateSteps(share, max int, maxDelay time.Duration) *dupPublisher {
	r.t.Helper()
	d := &dupPublisher{r: r, share: share, max: int64(max)}
	sub, err := r.nc.Subscribe(r.prefix+".step.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Header.Get(nats.MsgIdHdr), dupIDPrefix) {
			return
		}
		d.seen.Add(1)
		if randN(100) >= share || d.n.Load() >= d.max {
			return
		}
		n := d.n.Add(1)
		key := workflow.IdempotencyKey(m.Header.Get("Jetflow-Run"), m.Header.Get("Jetflow-Node"))
		dup := &nats.Msg{Subject: m.Subject, Header: nats.Header{}, Data: slices.Clone(m.Data)}
		for k, v := range m.Header {
			dup.Header[k] = slices.Clone(v)
		}
		dup.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s%d", dupIDPrefix, n))
		delay := time.Duration(randN(int(maxDelay/time.Millisecond)+1)) * time.Millisecond
		d.wg.Add(1)
		time.AfterFunc(delay, func() {
			defer d.wg.Done()
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			defer cancel()
			if _, err := r.js.PublishMsg(ctx, dup); err != nil {
				d.errs.Add(1)
				return
			}
			r.fault(fault{kind: faultDuplicate, at: time.Now(), key: key})
		})
	})
	if err != nil {
		r.t.Fatal(err)
	}
	d.sub = sub
	return d
}

// stop stops duplicating and waits for the pending duplicates to be published.
func (d *dupPublisher) stop() {
	_ = d.sub.Unsubscribe()
	d.wg.Wait()
}

// randN returns a random int in [0, n).
func randN(n int) int {
	if n <= 1 {
		return 0
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return int(v % uint64(n))
}

// refuseRunsWrites makes the runs bucket's stream refuse every new message for d, as a full
// store would (natstest.RefuseWrites), then puts its config back.
func (r *rig) refuseRunsWrites(d time.Duration) {
	r.t.Helper()
	at := time.Now()
	restore := natstest.RefuseWrites(r.t, r.js, "KV_"+r.names.RunsBucket())
	select {
	case <-time.After(d):
	case <-r.ctx.Done():
	}
	restore()
	r.fault(fault{kind: faultRunsOutage, at: at, until: time.Now()})
}
