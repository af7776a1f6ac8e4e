package workflow

import (
	"errors"
	"strings"
	"testing"
)

func TestStartRequestRoundTrip(t *testing.T) {
	in := &StartRequest{RunID: "r-1", Workflow: "wf", Input: []byte(`{"a":1}`), Def: "abc123",
		Parent: &ParentRef{Run: "p-1", Node: "sub", Workflow: "outer", Def: strings.Repeat("a", 64), Dispatch: DispatchFirst, Depth: 1}}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeStartRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.V != EnvelopeVersion || out.RunID != "r-1" || out.Workflow != "wf" || string(out.Input) != `{"a":1}` || out.Def != "abc123" || out.Parent == nil || *out.Parent != *in.Parent {
		t.Fatalf("decoded %+v from %s", out, b)
	}
	empty, err := DecodeStartRequest([]byte(`{"v":1,"run_id":"r","workflow":"w"}`))
	if err != nil || string(empty.Input) != "null" {
		t.Fatalf("no input: %+v, %v; want null", empty, err)
	}
}

func TestStartRequestRefusesWhatIsWrong(t *testing.T) {
	for _, c := range []struct{ body, says string }{
		{`nope`, "not JSON"},
		{`{"v":2,"run_id":"r","workflow":"w"}`, "version 2"},
		{`{"v":1,"run_id":"r.*","workflow":"w"}`, "run_id"},
		{`{"v":1,"run_id":"r","workflow":"a.b"}`, "workflow"},
		{`{"v":1,"run_id":"r","workflow":"w","def":"x y"}`, "def"},
		{`{"v":1,"run_id":"r","workflow":"w","parent":"../p"}`, "parent"},
		{`{"v":1,"run_id":"r","workflow":"w","parent":{"run":"../p"}}`, "parent"},
	} {
		_, err := DecodeStartRequest([]byte(c.body))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one malformed line that says %q", c.body, err, c.says)
		}
	}
}

func TestNodeTypeStartIsReserved(t *testing.T) {
	w := New("wf")
	w.Node("a", StartConsumerType)
	err := w.Validate(ValidateOptions{})
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("a node of type %q: %v, want it refused as reserved", StartConsumerType, err)
	}
}
