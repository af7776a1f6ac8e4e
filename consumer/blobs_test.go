package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// bigDoc is a JSON string of about n bytes.
func bigDoc(n int) []byte {
	b, _ := json.Marshal(map[string]string{"doc": strings.Repeat("lorem ipsum ", n/12)})
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// blobsOf lists the names in the blobs bucket.
func (f *fixture) blobsOf() []string {
	f.t.Helper()
	obs, err := f.js.ObjectStore(context.Background(), f.names.BlobsBucket())
	if err != nil {
		f.t.Fatal(err)
	}
	infos, err := obs.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	return out
}

// TestLargeDocumentThroughThreeNodes: a 10 MiB input goes through a → b → c: every handler
// sees the values themselves, the run record and node states hold references to blobs of
// the run, `runs get` shows the values, and the reaper purges the blobs with the run.
func TestLargeDocumentThroughThreeNodes(t *testing.T) {
	t.Parallel()
	f := setup(t, "big")
	wf := workflow.New("bigdoc")
	wf.Node("a", "big")
	wf.Node("b", "big", "a")
	wf.Node("c", "big", "b")
	f.apply(wf)
	doc := bigDoc(10 << 20)
	seen := map[string]string{} // node → what it checked
	var mu = make(chan struct{}, 1)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("big", func(ctx context.Context, s *Step) (any, error) {
			var in struct {
				Input json.RawMessage            `json:"input"`
				Nodes map[string]json.RawMessage `json:"nodes"`
			}
			if err := json.Unmarshal(s.Input, &in); err != nil {
				return nil, Permanent(err)
			}
			mu <- struct{}{}
			defer func() { <-mu }()
			switch s.Node {
			case "a":
				seen["a"] = sum(in.Input)
				return in.Input, nil // the document itself: a 10 MiB output
			case "b":
				seen["b"] = sum(in.Nodes["a"])
				return in.Nodes["a"], nil
			default:
				seen["c"] = sum(in.Nodes["b"]) + "/" + sum(in.Input)
				return map[string]int{"bytes": len(in.Nodes["b"])}, nil
			}
		})
	})
	ctx := context.Background()
	id, err := f.prod.Start(ctx, "bigdoc", doc, producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s: %s (b: %.300s)", end.Status, end.Reason, f.node(id, "b").LastError)
	}
	want := sum(doc)
	mu <- struct{}{}
	if seen["a"] != want || seen["b"] != want || seen["c"] != want+"/"+want {
		t.Errorf("handlers saw %v; want every one the document (%s)", seen, want[:12])
	}
	<-mu
	rec, err := f.store.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ref, ok := checkpoint.ParseBlobRef(rec.Input); !ok || ref.SHA256 != want || ref.Size != len(doc) {
		t.Errorf("run record input %s: want a reference to the document", rec.Input)
	}
	if ref, ok := checkpoint.ParseBlobRef(f.node(id, "a").Output); !ok || ref.SHA256 != want {
		t.Errorf("node a's output in its state: %.80s; want a reference", f.node(id, "a").Output)
	}
	view, err := f.store.Describe(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := view.Nodes["b"].Output; !bytes.Equal(got, doc) {
		t.Errorf("runs get shows b's output as %.80s (%d bytes); want the document", got, len(got))
	}
	if blobs := f.blobsOf(); len(blobs) != 1 || blobs[0] != id+"/"+want {
		t.Errorf("blobs %v; want one, %s/%s (the same document stored once for the run)", blobs, id, want[:12])
	}
	later := func() time.Time { return time.Now().Add(checkpoint.DefaultRetention + time.Hour) }
	r := checkpoint.NewReaper(f.js, f.store, f.names, checkpoint.ReaperConfig{Clock: later, Owner: "test-reaper"})
	if n, err := r.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d runs, %v", n, err)
	}
	if blobs := f.blobsOf(); len(blobs) != 0 {
		t.Errorf("blobs left after the run was purged: %v", blobs)
	}
}

// TestJoinOfLargeOutputsTravelsAsOneBlob: two parents' outputs fit inline each but not
// together; the child's input goes as one blob, and the child and its own child see the
// run input and every output.
func TestJoinOfLargeOutputsTravelsAsOneBlob(t *testing.T) {
	t.Parallel()
	f := setup(t, "part")
	wf := workflow.New("join")
	wf.Node("left", "part")
	wf.Node("right", "part")
	wf.Node("both", "part", "left", "right")
	wf.Node("last", "part", "both")
	f.apply(wf)
	part := bigDoc(200 << 10)
	got := make(chan string, 4)
	f.worker(Config{}, func(w *Worker) {
		w.Handle("part", func(ctx context.Context, s *Step) (any, error) {
			var in struct {
				Input json.RawMessage            `json:"input"`
				Nodes map[string]json.RawMessage `json:"nodes"`
			}
			if err := json.Unmarshal(s.Input, &in); err != nil {
				return nil, Permanent(err)
			}
			switch s.Node {
			case "left", "right":
				return json.RawMessage(part), nil
			case "both":
				got <- "both:" + string(in.Input) + ":" + sum(in.Nodes["left"]) + ":" + sum(in.Nodes["right"])
				return "joined", nil
			default:
				got <- "last:" + string(in.Input) + ":" + string(in.Nodes["both"])
				return "ok", nil
			}
		})
	})
	id := f.start("join", `{"k":1}`)
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndCompleted {
		t.Fatalf("run ended %s: %s", end.Status, end.Reason)
	}
	p := sum(part)
	for _, want := range []string{`both:{"k":1}:` + p + ":" + p, `last:{"k":1}:"joined"`} {
		if g := <-got; g != want {
			t.Errorf("handler saw %.120s; want %.120s", g, want)
		}
	}
}

// TestBadBlobsFailTheNode: a blob altered after it was stored fails the node that reads it
// (its handler unrun), and an output over the worker's payload limit fails its node; both
// permanently, with the reason, in the DLQ.
func TestBadBlobsFailTheNode(t *testing.T) {
	t.Parallel()
	f := setup(t, "eat", "spew")
	eat := workflow.New("eat")
	eat.Node("a", "eat")
	f.apply(eat)
	spew := workflow.New("spew")
	spew.Node("a", "spew")
	f.apply(spew)
	ctx := context.Background()
	doc := bigDoc(400 << 10)
	id, err := f.prod.Start(ctx, "eat", doc, producer.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Someone who may write blobs puts other bytes under the run's blob name.
	obs, err := f.js.ObjectStore(ctx, f.names.BlobsBucket())
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.ToUpper(doc)
	if _, err := obs.PutBytes(ctx, id+"/"+sum(doc), forged); err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 2)
	f.worker(Config{MaxPayload: 512 << 10}, func(w *Worker) {
		w.Handle("eat", func(ctx context.Context, s *Step) (any, error) { ran <- "eat"; return "ate", nil })
		w.Handle("spew", func(ctx context.Context, s *Step) (any, error) { return json.RawMessage(bigDoc(600 << 10)), nil })
	})
	if end := f.waitEnd(id, 60*time.Second); end.Status != checkpoint.EndFailed {
		t.Fatalf("run with a forged blob ended %s, want failed", end.Status)
	}
	if st := f.node(id, "a"); st.Status != checkpoint.StatusDead || !strings.Contains(st.LastError, "does not match its reference") {
		t.Errorf("node a: %s, %q; want dead: the blob does not match", st.Status, st.LastError)
	}
	select {
	case <-ran:
		t.Error("the handler ran on a forged input")
	default:
	}
	big := f.start("spew", `{}`)
	if end := f.waitEnd(big, 60*time.Second); end.Status != checkpoint.EndFailed {
		t.Fatalf("run with a too large output ended %s, want failed", end.Status)
	}
	if st := f.node(big, "a"); st.Status != checkpoint.StatusDead || !strings.Contains(st.LastError, "the limit is 524288 bytes") || st.Attempts != 1 {
		t.Errorf("node a of spew: %s after %d attempts, %q; want dead at once, the size in the reason", st.Status, st.Attempts, st.LastError)
	}
	entries, err := listDLQ(f)
	if err != nil || len(entries) != 2 {
		t.Fatalf("DLQ: %d entries (%v), want 2", len(entries), err)
	}
}
