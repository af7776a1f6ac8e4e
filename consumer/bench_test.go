package consumer

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/natstest"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Benchmark sizes from the issue: 2,000 runs of a linear 5-node noop workflow, 64 in flight.
const (
	benchRuns     = 2000
	benchSteps    = 5
	benchInFlight = 64
)

// BenchmarkEngine measures jetflow's step throughput; BenchmarkBaseline does only the
// unavoidable JetStream work per step by hand (consume, KV get, KV create, publish the next
// step with Nats-Msg-Id, ack; the last step creates the run's end record instead) on the same
// server, so the two figures compare directly.
// Run: go test ./consumer -run '^$' -bench . -benchtime 1x
func BenchmarkEngine(b *testing.B) {
	for range b.N {
		b.StopTimer()
		f := setupB(b)
		wf := workflow.New("bench")
		prev := []string{}
		for i := range benchSteps {
			wf.Node(fmt.Sprintf("s%d", i), "noop", prev...)
			prev = []string{fmt.Sprintf("s%d", i)}
		}
		if _, _, err := f.store.ApplyWorkflow(context.Background(), wf); err != nil {
			b.Fatal(err)
		}
		for i := range benchRuns {
			if _, err := f.prod.Start(context.Background(), "bench", []byte(fmt.Sprintf(`{"i":%d}`, i)), startOpts()); err != nil {
				b.Fatal(err)
			}
		}
		ends := f.countEnds(b)
		b.StartTimer()
		start, cpu, endProfile, wire := time.Now(), cpuTime(), profileTimed(b, "engine"), wireStats(f.srv.Server)
		stop := f.benchWorker(b)
		waitCount(b, ends, benchRuns)
		elapsed, cpu := time.Since(start), cpuTime()-cpu
		endProfile()
		wire(b)
		b.StopTimer()
		stop()
		b.ReportMetric(float64(benchRuns*benchSteps)/elapsed.Seconds(), "steps/s")
		b.ReportMetric(float64(cpu.Microseconds())/(benchRuns*benchSteps), "cpu-µs/step")
	}
}

func BenchmarkBaseline(b *testing.B) {
	b.Run("minimal", func(b *testing.B) { baseline(b, false) })
	b.Run("jetflow-bytes", func(b *testing.B) { baseline(b, true) })
}

// A baseline's messages: minimal (a short run name, a 7-byte body, a 31-byte node value),
// or with jetflow's bytes (what DESIGN.md makes every step carry): a UUID run ID, the
// subject, headers and body sizes of a step message, a node value the size of a done
// node state, the same keys.
type baselineShape struct {
	jetflow bool
	body    []byte // the step body
	value   []byte // the node value
}

func newBaselineShape(jetflow bool) baselineShape {
	if !jetflow {
		return baselineShape{body: []byte(`{"v":1}`), value: []byte(`{"status":"done","output":null}`)}
	}
	at := time.Now().UTC().Format(time.RFC3339Nano)
	return baselineShape{
		jetflow: true,
		body: []byte(`{"v":1,"run_id":"` + uuid.NewString() + `","workflow":"bench","def":"` + strings.Repeat("0", 64) +
			`","node":"s1","input":{"input":{"i":1234},"nodes":{"s0":null}},"dispatch":"d"}`),
		value: []byte(`{"status":"done","attempts":1,"dispatch":"d","output":null,"worker":"host-12345-0123456789abcdef","started_at":"` +
			at + `","ended_at":"` + at + `"}`),
	}
}

// run names run i; subject, msgID and headers make the message of its step n.
func (sh baselineShape) run(i int) string {
	if sh.jetflow {
		return uuid.Must(uuid.NewV7()).String()
	}
	return "r" + strconv.Itoa(i)
}

func (sh baselineShape) msg(run string, n int) *nats.Msg {
	m := &nats.Msg{Subject: "base.step." + run + "." + strconv.Itoa(n), Data: sh.body, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, run+"."+strconv.Itoa(n))
	if sh.jetflow {
		m.Header.Set(workflow.HeaderRun, run)
		m.Header.Set(workflow.HeaderNode, "s"+strconv.Itoa(n))
	}
	return m
}

func baseline(b *testing.B, jetflowBytes bool) {
	sh := newBaselineShape(jetflowBytes)
	for range b.N {
		b.StopTimer()
		srv := natstest.Start(b)
		_, js := srv.Connect(b)
		ctx := context.Background()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BASE", Subjects: []string{"base.>"},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
			b.Fatal(err)
		}
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "base_kv", Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
		st, _ := js.Stream(ctx, "KV_base_kv")
		cfg := st.CachedInfo().Config
		cfg.AllowDirect = false // as jetflow's runs bucket: reads go to the leader
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		if _, err := js.CreateConsumer(ctx, "BASE", jetstream.ConsumerConfig{Durable: "base", AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxDeliver: 20, MaxAckPending: 1000, FilterSubject: "base.step.>"}); err != nil {
			b.Fatal(err)
		}
		for i := range benchRuns {
			if _, err := js.PublishMsg(ctx, sh.msg(sh.run(i), 0)); err != nil {
				b.Fatal(err)
			}
		}
		nc2, _ := nats.Connect(srv.ClientURL())
		js2, _ := jetstream.New(nc2)
		kv2, _ := js2.KeyValue(ctx, "base_kv")
		cons2, _ := js2.Consumer(ctx, "BASE", "base")
		var done atomic.Int64
		finished := make(chan struct{})
		sem := make(chan struct{}, benchInFlight)
		b.StartTimer()
		start, cpu, endProfile, wire := time.Now(), cpuTime(), profileTimed(b, "baseline"), wireStats(srv.Server)
		var wg sync.WaitGroup
		cc, err := cons2.Consume(func(m jetstream.Msg) {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				parts := strings.Split(m.Subject(), ".") // base.step.<run>.<i>
				run, i := parts[2], parts[3]
				key := "node." + run + "." + i
				if _, err := kv2.Get(ctx, key); err == nil {
					_ = m.Ack()
					return
				}
				if _, err := kv2.Create(ctx, key, sh.value); err != nil {
					_ = m.Nak()
					return
				}
				n, _ := strconv.Atoi(i)
				if n+1 < benchSteps {
					if _, err := js2.PublishMsg(ctx, sh.msg(run, n+1)); err != nil {
						_ = m.Nak()
						return
					}
				} else {
					// The last step's "next" is the run's end record, as in jetflow.
					if _, err := kv2.Create(ctx, "end."+run, []byte(`{"status":"completed","at":"2026-11-28T10:44:44.123456789Z"}`)); err != nil {
						_ = m.Nak()
						return
					}
					if done.Add(1) == benchRuns {
						close(finished)
					}
				}
				_ = m.Ack()
			})
		}, jetstream.PullMaxMessages(benchInFlight))
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-finished:
		case <-time.After(5 * time.Minute):
			b.Fatal("baseline did not finish")
		}
		elapsed, cpu := time.Since(start), cpuTime()-cpu
		endProfile()
		wire(b)
		b.StopTimer()
		cc.Stop()
		wg.Wait()
		nc2.Close()
		b.ReportMetric(float64(benchRuns*benchSteps)/elapsed.Seconds(), "steps/s")
		b.ReportMetric(float64(cpu.Microseconds())/(benchRuns*benchSteps), "cpu-µs/step")
	}
}

// cpuTime is the CPU time (user and system) this process has used: server and client
// share it, so per step it is the whole cost of a step on this machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wireStats reports the client messages and bytes the server received and sent per step
// between its call and the call of the function it returns: the broker work of a step.
func wireStats(s *server.Server) func(b *testing.B) {
	before, _ := s.Varz(nil)
	return func(b *testing.B) {
		after, _ := s.Varz(nil)
		steps := float64(benchRuns * benchSteps)
		b.ReportMetric(float64(after.InMsgs-before.InMsgs)/steps, "in-msgs/step")
		b.ReportMetric(float64(after.OutMsgs-before.OutMsgs)/steps, "out-msgs/step")
		b.ReportMetric(float64(after.InBytes-before.InBytes)/steps, "in-B/step")
		b.ReportMetric(float64(after.OutBytes-before.OutBytes)/steps, "out-B/step")
	}
}

// profileTimed writes a CPU profile of the timed part only (no setup, no start of the
// runs) to $JETFLOW_BENCH_PROFILE-<name>.prof when that variable is set; -cpuprofile would
// mix in the setup. The returned function ends it.
func profileTimed(b *testing.B, name string) func() {
	prefix := os.Getenv("JETFLOW_BENCH_PROFILE")
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + "-" + name + ".prof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// BenchmarkStepLatency measures one step's end-to-end latency with nothing queued (C=1, one
// run at a time): from a node's result being recorded to its child's result being recorded —
// the child's publish, delivery, KV read, handler, KV write. Reports p50 and p99.
func BenchmarkStepLatency(b *testing.B) {
	const runs = 200
	for range b.N {
		b.StopTimer()
		f := setupB(b)
		wf := workflow.New("latency")
		prev := []string{}
		for i := range benchSteps {
			wf.Node(fmt.Sprintf("s%d", i), "noop", prev...)
			prev = []string{fmt.Sprintf("s%d", i)}
		}
		if _, _, err := f.store.ApplyWorkflow(context.Background(), wf); err != nil {
			b.Fatal(err)
		}
		stop := f.benchWorkerC(b, 1)
		var lat []time.Duration
		b.StartTimer()
		for i := range runs {
			id, err := f.prod.Start(context.Background(), "latency", []byte(fmt.Sprintf(`{"i":%d}`, i)), startOpts())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err = f.store.WaitEnd(ctx, id)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			var prevEnd time.Time
			for s := range benchSteps {
				st, _, err := f.store.Node(context.Background(), id, fmt.Sprintf("s%d", s))
				if err != nil || st == nil {
					b.Fatal(err)
				}
				if s > 0 {
					lat = append(lat, st.EndedAt.Sub(prevEnd))
				}
				prevEnd = st.EndedAt
			}
		}
		b.StopTimer()
		stop()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99_ms")
	}
}
