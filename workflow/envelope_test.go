package workflow

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var testDef = strings.Repeat("ab", 32)

func testEnvelope() *Envelope {
	return &Envelope{RunID: "run-1", Workflow: "orders", Def: testDef, Node: "charge", Input: json.RawMessage(`{"input":{"n":1},"nodes":{}}`), Dispatch: DispatchFirst}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    *Envelope
		want Envelope // after Encode and Decode
	}{
		{"first dispatch", testEnvelope(), Envelope{V: 1, RunID: "run-1", Workflow: "orders", Def: testDef, Node: "charge", Input: json.RawMessage(`{"input":{"n":1},"nodes":{}}`), Dispatch: "d"}},
		{"schedule", &Envelope{RunID: "r", Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`[1,2]`), Dispatch: DispatchSchedule(3)},
			Envelope{V: 1, RunID: "r", Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`[1,2]`), Dispatch: "s3"}},
		{"replay", &Envelope{RunID: "r", Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`"x"`), Dispatch: DispatchReplay(42)},
			Envelope{V: 1, RunID: "r", Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`"x"`), Dispatch: "r42"}},
		{"defaults: dispatch d, input null, version 1", &Envelope{V: 7, RunID: "r", Workflow: "w", Def: testDef, Node: "n"},
			Envelope{V: 1, RunID: "r", Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`null`), Dispatch: "d"}},
		{"longest run ID", &Envelope{RunID: strings.Repeat("r", 64), Workflow: "w", Def: testDef, Node: "n", Dispatch: "d"},
			Envelope{V: 1, RunID: strings.Repeat("r", 64), Workflow: "w", Def: testDef, Node: "n", Input: json.RawMessage(`null`), Dispatch: "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := tt.e.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeEnvelope(b)
			if err != nil {
				t.Fatalf("DecodeEnvelope(%s): %v", b, err)
			}
			if !sameEnvelope(*got, tt.want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", *got, tt.want)
			}
			again, err := got.Encode()
			if err != nil || string(again) != string(b) {
				t.Fatalf("re-encoded %s (%v), first %s", again, err, b)
			}
		})
	}
}

// sameEnvelope compares two envelopes, their inputs as JSON values.
func sameEnvelope(a, b Envelope) bool {
	return a.V == b.V && a.RunID == b.RunID && a.Workflow == b.Workflow && a.Def == b.Def &&
		a.Node == b.Node && a.Dispatch == b.Dispatch && compactJSON(a.Input) == compactJSON(b.Input)
}

// compactJSON returns b re-encoded from its value, so equal values compare equal.
func compactJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return "invalid:" + string(b)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "invalid:" + string(b)
	}
	return string(out)
}

func TestEnvelopeEncodeDoesNotChangeItsReceiver(t *testing.T) {
	t.Parallel()
	e := &Envelope{RunID: "r", Workflow: "w", Def: testDef, Node: "n"}
	if _, err := e.Encode(); err != nil {
		t.Fatal(err)
	}
	if e.V != 0 || e.Dispatch != "" || e.Input != nil {
		t.Fatalf("Encode changed its receiver: %+v", e)
	}
}

func TestDecodeEnvelopeIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	b := `{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","dispatch":"d","trace":"x","extra":{"a":[1]}}`
	e, err := DecodeEnvelope([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Input) != "null" || e.RunID != "r" {
		t.Fatalf("decoded %+v", e)
	}
}

func TestMsgID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dispatch, want string
	}{
		{"d", "run-1.charge"},
		{"", "run-1.charge"},
		{DispatchSchedule(1), "run-1.charge.s1"},
		{"s3", "run-1.charge.s3"},
		{DispatchReplay(42), "run-1.charge.r42"},
		{DispatchReplay(18446744073709551615), "run-1.charge.r18446744073709551615"},
	}
	for _, tt := range tests {
		t.Run(tt.dispatch, func(t *testing.T) {
			t.Parallel()
			e := testEnvelope()
			e.Dispatch = tt.dispatch
			if got := e.MsgID(); got != tt.want {
				t.Fatalf("MsgID() = %q, want %q", got, tt.want)
			}
		})
	}
	if got := IdempotencyKey("run-1", "charge"); got != testEnvelope().MsgID() {
		t.Errorf("IdempotencyKey %q differs from the first dispatch's msg ID", got)
	}
}

func TestDecodeEnvelopeMalformed(t *testing.T) {
	t.Parallel()
	valid := func(edit func(m map[string]any)) string {
		m := map[string]any{"v": 1, "run_id": "r", "workflow": "w", "def": testDef, "node": "n", "input": nil, "dispatch": "d"}
		edit(m)
		b, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
	set := func(k string, v any) string { return valid(func(m map[string]any) { m[k] = v }) }
	tests := []struct {
		name, body, want string
	}{
		{"empty body", "", "malformed: body is not a JSON envelope: unexpected end of JSON input"},
		{"not JSON", "hello", "malformed: body is not a JSON envelope: invalid character 'h' looking for beginning of value"},
		{"array", "[1]", "malformed: body is not a JSON envelope: json: cannot unmarshal array into Go value of type workflow.Envelope"},
		{"null", "null", "malformed: envelope version 0, want 1"},
		{"truncated", set("v", 1)[:20], ""},
		{"trailing data", set("v", 1) + " x", ""},
		{"trailing object", set("v", 1) + "{}", ""},
		{"trailing brace", set("v", 1) + "}", ""},
		{"v missing", valid(func(m map[string]any) { delete(m, "v") }), "malformed: envelope version 0, want 1"},
		{"v 2", set("v", 2), "malformed: envelope version 2, want 1"},
		{"v string", set("v", "1"), ""},
		{"run_id missing", valid(func(m map[string]any) { delete(m, "run_id") }), `malformed: bad run_id ""`},
		{"run_id with dot", set("run_id", "a.b"), `malformed: bad run_id "a.b"`},
		{"run_id star", set("run_id", "*"), `malformed: bad run_id "*"`},
		{"run_id gt", set("run_id", ">"), `malformed: bad run_id ">"`},
		{"run_id space", set("run_id", "a b"), `malformed: bad run_id "a b"`},
		{"run_id newline", set("run_id", "a\nb"), `malformed: bad run_id "a b"`},
		{"run_id 65 chars", set("run_id", strings.Repeat("r", 65)), `malformed: bad run_id "` + strings.Repeat("r", 65) + `"`},
		{"run_id 300 chars", set("run_id", strings.Repeat("r", 300)), `malformed: bad run_id "` + strings.Repeat("r", 80) + `…"`},
		{"workflow bad", set("workflow", "a.b"), `malformed: bad workflow name "a.b"`},
		{"node bad", set("node", "x>"), `malformed: bad node name "x>"`},
		{"node missing", valid(func(m map[string]any) { delete(m, "node") }), `malformed: bad node name ""`},
		{"def short", set("def", "abc"), `malformed: bad definition hash "abc"`},
		{"def upper case", set("def", strings.ToUpper(testDef)), `malformed: bad definition hash "` + strings.ToUpper(testDef) + `"`},
		{"dispatch missing", valid(func(m map[string]any) { delete(m, "dispatch") }), `malformed: bad dispatch ""`},
		{"dispatch x", set("dispatch", "x"), `malformed: bad dispatch "x"`},
		{"dispatch s", set("dispatch", "s"), `malformed: bad dispatch "s"`},
		{"dispatch r without number", set("dispatch", "rx"), `malformed: bad dispatch "rx"`},
		{"dispatch negative", set("dispatch", "s-1"), `malformed: bad dispatch "s-1"`},
		{"dispatch plus", set("dispatch", "s+1"), `malformed: bad dispatch "s+1"`},
		{"dispatch d1", set("dispatch", "d1"), `malformed: bad dispatch "d1"`},
		{"dispatch too big", set("dispatch", "r18446744073709551616"), `malformed: bad dispatch "r18446744073709551616"`},
		{"input missing its value", `{"v":1,"input":}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := DecodeEnvelope([]byte(tt.body))
			if e != nil {
				t.Errorf("DecodeEnvelope returned an envelope with its error: %+v", e)
			}
			requireOneLine(t, err)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "malformed: ") {
				t.Fatalf("error %q does not start with \"malformed: \"", err)
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Fatalf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"short", "hello", 10, "hello"},
		{"newlines become one space", "a\n\n\tb\r\nc", 20, "a b c"},
		{"leading newline dropped", "\nabc", 10, "abc"},
		{"control characters dropped", "a\x00b\x1bc\x7f", 10, "abc"},
		{"cut", "abcdef", 3, "abc…"},
		{"cut keeps UTF-8 whole", "aéé", 2, "a…"},
		{"exact length", "abc", 3, "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := OneLine(tt.in, tt.max); got != tt.want {
				t.Fatalf("OneLine(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}
