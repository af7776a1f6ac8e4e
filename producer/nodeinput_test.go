package producer

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestEncodeNodeInput(t *testing.T) {
	for _, c := range []struct {
		input string
		nodes map[string]json.RawMessage
		fast  bool
	}{
		{`{"n": 1}`, map[string]json.RawMessage{}, true},
		{`null`, map[string]json.RawMessage{"b": json.RawMessage(`[1, 2]`), "a": json.RawMessage(`null`)}, true},
		{`"<x>"`, map[string]json.RawMessage{}, false},
		{`1`, map[string]json.RawMessage{"a": json.RawMessage(`"&"`)}, false},
		{`1`, nil, false},
	} {
		got, err := EncodeNodeInput(json.RawMessage(c.input), c.nodes)
		std, _ := json.Marshal(NodeInput{Input: json.RawMessage(c.input), Nodes: c.nodes})
		if err != nil || !bytes.Equal(got, std) {
			t.Errorf("EncodeNodeInput(%s, %v) = %s, %v; encoding/json %s", c.input, c.nodes, got, err, std)
		}
		if _, ok := appendNodeInput(json.RawMessage(c.input), c.nodes); ok != c.fast {
			t.Errorf("EncodeNodeInput(%s, %v): fast path %v, want %v", c.input, c.nodes, ok, c.fast)
		}
	}
}

// FuzzEncodeNodeInput checks the fast path against encoding/json, byte for byte.
func FuzzEncodeNodeInput(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "s0", []byte(`null`), "s1", []byte(`{"x": "y"}`))
	f.Fuzz(func(t *testing.T, input []byte, k1 string, v1 []byte, k2 string, v2 []byte) {
		nodes := map[string]json.RawMessage{k1: v1, k2: v2}
		b, ok := appendNodeInput(input, nodes)
		if !ok {
			return
		}
		std, err := json.Marshal(NodeInput{Input: input, Nodes: nodes})
		if err != nil || !bytes.Equal(b, std) {
			t.Fatalf("fast %s\n std  %s (%v)", b, std, err)
		}
	})
}
