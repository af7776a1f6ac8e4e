package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// The node states the worker writes on its happy path take the fast encoder.
func TestNodeJSONFastPathIsTaken(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 123456789, time.UTC)
	for _, n := range []Node{
		{Status: StatusDone, Attempts: 1, Dispatch: "d", Output: json.RawMessage("null"), Worker: "w-1", StartedAt: at, EndedAt: at},
		{Status: StatusRunning, Attempts: 2, Crashes: 1, Delivery: 3, Seq: 99, Dispatch: "s2", Worker: "w-1", StartedAt: at, Sched: 2},
		{Status: StatusRetrying, Attempts: 1, Dispatch: "d", NotBefore: at, LastError: "boom: 503 from api.example.com"},
	} {
		fast, ok := n.appendJSON(nil)
		if !ok {
			t.Fatalf("%+v did not take the fast path", n)
		}
		std, err := json.Marshal(&n)
		if err != nil || !bytes.Equal(fast, std) {
			t.Fatalf("fast %s\n std %s (%v)", fast, std, err)
		}
	}
	n := Node{Status: StatusDead, LastError: `quote " and <html>`}
	if _, ok := n.appendJSON(nil); ok {
		t.Fatal("a string that needs escaping took the fast path")
	}
	if b, err := marshalValue(&n); err != nil || !json.Valid(b) {
		t.Fatalf("marshalValue fallback: %s, %v", b, err)
	}
}

// FuzzNodeJSON checks the fast node encoder against encoding/json, byte for byte.
func FuzzNodeJSON(f *testing.F) {
	f.Add("done", 1, uint64(0), "d", int64(0), "", []byte("null"), true, "w-1", int64(1764324000123456789), 0, []byte(nil))
	f.Add("dead", 5, uint64(7), "r3", int64(1764324000000000000), "boom\n<x>", []byte(`{"a": [1, 2]}`), false, "", int64(-62135596800000000000/1000), 2, []byte(`"é"`))
	f.Fuzz(func(t *testing.T, status string, attempts int, seq uint64, dispatch string, notBefore int64, lastErr string, output []byte, fallback bool, worker string, started int64, sched int, input []byte) {
		n := Node{Status: status, Attempts: attempts, Crashes: attempts / 3, Delivery: seq / 2, Seq: seq, Dispatch: dispatch,
			LastError: lastErr, Output: output, Fallback: fallback, Worker: worker, Replays: sched / 2, Sched: sched,
			Input: input, EditedFrom: seq / 3, Reason: lastErr, DLQSeq: seq / 5}
		if notBefore != 0 {
			n.NotBefore = time.Unix(0, notBefore).UTC()
		}
		if started != 0 {
			n.StartedAt = time.Unix(0, started).In(time.FixedZone("x", 3600))
			n.EndedAt = time.Unix(0, started)
		}
		fast, ok := n.appendJSON(nil)
		std, err := json.Marshal(&n)
		if !ok {
			return
		}
		if err != nil || !bytes.Equal(fast, std) {
			t.Fatalf("fast and encoding/json differ (%v):\n fast %s\n std  %s", err, fast, std)
		}
	})
}

// Every field of Node is written by the fast encoder: a field added to Node but not to
// appendJSON would be dropped from every state written; here every field holds a plain
// non-zero value, and the fast path must agree with encoding/json byte for byte.
func TestNodeJSONCoversEveryField(t *testing.T) {
	var n Node
	v := reflect.ValueOf(&n).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprintf("v%d", i))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Uint64:
			f.SetUint(uint64(i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice: // json.RawMessage
			f.SetBytes([]byte(strconv.Itoa(i + 1)))
		case reflect.Struct: // time.Time
			f.Set(reflect.ValueOf(time.Date(2026, 11, 28, 10, 0, i, 0, time.UTC)))
		case reflect.Pointer: // *Items: encoding/json writes those, left nil here (see below)
		default:
			t.Fatalf("field %s has kind %s: teach this test (and appendJSON) about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	fast, ok := n.appendJSON(nil)
	if !ok {
		t.Fatalf("%+v did not take the fast path", n)
	}
	std, err := json.Marshal(&n)
	if err != nil || !bytes.Equal(fast, std) {
		t.Fatalf("a field is missing from appendJSON:\nfast %s\n std %s (%v)", fast, std, err)
	}
	// A for_each node's bookkeeping, in every shape.
	for _, it := range []*Items{
		{},
		{List: json.RawMessage(`{"$blob":"ab","size":3}`), Count: 9, Done: 3, Dead: 1, Next: 6,
			Inflight: []Release{{Item: 4, By: ReleasedByNode}, {Item: 5, By: 3, Dispatch: "r12"}}, Requeue: []Release{{Item: 2, By: ReleasedByReplay, Dispatch: "r7"}}},
		{Count: 1, Requeue: []Release{}},
	} {
		n.Items = it
		fast, ok := n.appendJSON(nil)
		std, err := json.Marshal(&n)
		if !ok || err != nil || !bytes.Equal(fast, std) {
			t.Fatalf("items %+v (fast path %v):\nfast %s\n std %s (%v)", it, ok, fast, std, err)
		}
	}
}

// TestNodeJSONWritesEveryField: every field of Node set, the fast path writes what
// encoding/json writes. A field added to Node but not to appendJSON fails here (the wait
// node's signal was dropped so, silently, before this test).
func TestNodeJSONWritesEveryField(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	var n Node
	v := reflect.ValueOf(&n).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString("x" + strconv.Itoa(i))
		case int:
			f.SetInt(int64(i + 1))
		case uint64:
			f.SetUint(uint64(i + 1))
		case bool:
			f.SetBool(true)
		case time.Time:
			f.Set(reflect.ValueOf(at))
		case json.RawMessage:
			f.Set(reflect.ValueOf(json.RawMessage(strconv.Itoa(i))))
		case *Items:
			f.Set(reflect.ValueOf(&Items{List: json.RawMessage(`"ref"`), Count: 3, Done: 1}))
		default:
			t.Fatalf("field %s of type %s: teach this test to set it", v.Type().Field(i).Name, f.Type())
		}
	}
	fast, ok := n.appendJSON(nil)
	if !ok {
		t.Fatalf("%+v did not take the fast path", n)
	}
	std, err := json.Marshal(&n)
	if err != nil || !bytes.Equal(fast, std) {
		t.Fatalf("fast %s\n std %s (%v)", fast, std, err)
	}
}
