package workflow

import (
	"encoding/json"
	"testing"
)

// The envelopes jetflow writes take the fast paths both ways; FuzzEnvelopeFastPath checks
// that the fast paths agree with encoding/json.
func TestEnvelopeFastPathIsTaken(t *testing.T) {
	e := &Envelope{RunID: "019ac3f2-1111-7222-8333-444455556666", Workflow: "orders", Def: testDef, Node: "charge",
		Input: json.RawMessage(`{"input":{"n":1, "s":"é"},"nodes":{"a":null}}`), Dispatch: "s2"}
	c := *e
	c.V = EnvelopeVersion
	b, ok := c.appendCanonical()
	if !ok {
		t.Fatal("a plain envelope did not take the fast encoder")
	}
	got, ok := decodeCanonical(b)
	if !ok {
		t.Fatalf("the fast encoder's output did not take the fast decoder: %s", b)
	}
	if got.RunID != e.RunID || got.Workflow != e.Workflow || got.Def != e.Def || got.Node != e.Node || got.Dispatch != e.Dispatch ||
		string(got.Input) != `{"input":{"n":1,"s":"é"},"nodes":{"a":null}}` {
		t.Fatalf("round trip: %+v", got)
	}
	// A for_each item's step too, its index after the dispatch.
	item := c
	i := 17
	item.Item = &i
	ib, ok := item.appendCanonical()
	if !ok {
		t.Fatal("an item's envelope did not take the fast encoder")
	}
	if std, _ := json.Marshal(&item); string(std) != string(ib) {
		t.Fatalf("item: fast %s\n std %s", ib, std)
	}
	if got, ok := decodeCanonical(ib); !ok || got.Item == nil || *got.Item != 17 || got.Dispatch != "s2" {
		t.Fatalf("item round trip: %+v, %v", got, ok)
	}
	// What encoding/json would escape goes through encoding/json.
	c.Input = json.RawMessage(`"<b>"`)
	if _, ok := c.appendCanonical(); ok {
		t.Fatal("an input with HTML characters took the fast encoder")
	}
	if b, err := c.Encode(); err != nil || string(b) != `{"v":1,"run_id":"019ac3f2-1111-7222-8333-444455556666","workflow":"orders","def":"`+testDef+`","node":"charge","input":"\u003cb\u003e","dispatch":"s2"}` {
		t.Fatalf("Encode = %s, %v", b, err)
	}
}
