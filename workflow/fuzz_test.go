package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add seeds below are the cases
// each target must keep passing.

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"run_id":"run-1","workflow":"orders","def":"` + testDef + `","node":"charge","input":{"input":{"n":1},"nodes":{}},"dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":[1, 2.50, "<&>"],"dispatch":"s3"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","dispatch":"r42","extra":true}`,
		`{"v":2}`,
		`{"v":1,"run_id":"a.b"}`,
		`null`,
		``,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":"\u2028 é \ud800","dispatch":"d"} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("error is not one line: %q", msg)
			}
			return
		}
		if id := e.MsgID(); strings.ContainsAny(id, " *>\t\r\n") {
			t.Fatalf("msg ID %q holds a space or a wildcard", id)
		}
		out, err := e.Encode()
		if err != nil {
			t.Fatalf("Encode of a decoded envelope: %v", err)
		}
		e2, err := DecodeEnvelope(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if e.V != e2.V || e.RunID != e2.RunID || e.Workflow != e2.Workflow || e.Def != e2.Def ||
			e.Node != e2.Node || e.Dispatch != e2.Dispatch || canonRaw(e.Input) != canonRaw(e2.Input) {
			t.Fatalf("round trip changed the envelope:\n %+v\n %+v", e, e2)
		}
		out2, err := e2.Encode()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("second encode differs (%v):\n %s\n %s", err, out, out2)
		}
	})
}

// FuzzEnvelopeFastPath checks the hand-written envelope paths against encoding/json: what
// the fast decoder accepts, encoding/json decodes to the same envelope; what the fast
// encoder writes is byte for byte what encoding/json writes.
func FuzzEnvelopeFastPath(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"run_id":"run-1","workflow":"orders","def":"` + testDef + `","node":"charge","input":{"input":{"n":1},"nodes":{}},"dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":[1, 2.50, "<&>"],"dispatch":"s3"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input": 1 ,"dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":"x\",\"dispatch\":\"q","dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":1,"dispatch":"x","dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"x","node":"n","input":{"a":"\u2028"},"dispatch":"d"}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":{"a":1},"dispatch":"d","item":42}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":{"a":"b","item":5},"dispatch":"r7","item":0}`,
		`{"v":1,"run_id":"r","workflow":"w","def":"` + testDef + `","node":"n","input":1,"dispatch":"d","item":07}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if fast, ok := decodeCanonical(b); ok {
			var std Envelope
			if err := json.Unmarshal(b, &std); err != nil {
				t.Fatalf("fast decode accepted what encoding/json refuses (%v): %s", err, b)
			}
			if fast.V != std.V || fast.RunID != std.RunID || fast.Workflow != std.Workflow || fast.Def != std.Def ||
				fast.Node != std.Node || fast.Dispatch != std.Dispatch || !bytes.Equal(fast.Input, std.Input) ||
				(fast.Item == nil) != (std.Item == nil) || fast.Item != nil && *fast.Item != *std.Item {
				t.Fatalf("fast and encoding/json decodes differ:\n %+v\n %+v", fast, std)
			}
		}
		var e Envelope
		if json.Unmarshal(b, &e) != nil {
			return
		}
		e.V = EnvelopeVersion
		if fast, ok := e.appendCanonical(); ok {
			std, err := json.Marshal(&e)
			if err != nil || !bytes.Equal(fast, std) {
				t.Fatalf("fast encode differs from encoding/json (%v):\n %s\n %s", err, fast, std)
			}
		}
	})
}

// canonRaw is raw JSON as encoding/json writes a json.RawMessage: compact, HTML escaped.
func canonRaw(b []byte) string {
	var c, h bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return "invalid:" + string(b)
	}
	json.HTMLEscape(&h, c.Bytes())
	return h.String()
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"name: wf\nnodes:\n  - name: a\n    type: noop\n  - name: b\n    type: exec\n    needs: [a]\n    with: {command: [echo, hi]}\n",
		"name: wf\nnodes:\n  - name: a\n    type: noop\n    needs: [c]\n  - name: c\n    type: noop\n    needs: [a]\n",
		"name: wf\nnodes:\n  - name: a\n    type: sleep\n    with: {duration: 1h}\n    retry: {max_attempts: 3, initial: 1s, max: 1m, multiplier: 2, jitter: 0.5}\n    timeout: 30s\n    max_crashes: 2\n",
		`{"name":"wf","nodes":[{"name":"a","type":"noop","with":{"output":{"n":1}}},{"name":"b","type":"noop","needs":["a"]}]}`,
		"name: wf\nnodes:\n  - name: a\n    type: noop\n    retry:\n      multiplier: .nan\n",
		"name: wf\nnodes:\n  - name: a\n    type: noop\n   bad: [\n",
		"a: &x [*x]\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Parse("f.yaml", data, ValidateOptions{})
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError: %v", err, err)
			}
			if len(ve.Problems) == 0 {
				t.Fatal("ValidationError without problems")
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("error is not one line: %q", msg)
			}
			for _, l := range ve.Lines() {
				if strings.ContainsAny(l, "\n\r") {
					t.Fatalf("problem is not one line: %q", l)
				}
			}
			return
		}
		// A valid definition can be stored: it hashes, and the registry's copy (its canonical
		// JSON read back with encoding/json) is still valid.
		canon, err := w.Canonical()
		if err != nil {
			t.Fatalf("Canonical of a valid definition: %v", err)
		}
		var back Workflow
		if err := json.Unmarshal(canon, &back); err != nil {
			t.Fatalf("canonical JSON does not decode: %v\n%s", err, canon)
		}
		if err := back.Validate(ValidateOptions{}); err != nil {
			t.Fatalf("the registry's copy is invalid: %v\n%s", err, canon)
		}
	})
}

func FuzzExpand(f *testing.F) {
	for _, s := range []struct{ tmpl, input string }{
		{"${{ input.a }}", `{"a": 1}`},
		{"x=${{ input.a.b }} y=${{ nodes.p }}", `{"a": {"b": [1, "two", null]}}`},
		{"${{ map(input, # * 2) }}", `[1, 2, 3]`},
		{"${{ input?.x ?? 'd' }}", `{}`},
		{"${{ repeat('x', 10) + run_id }}", `null`},
		{"${{ join(map(1..3, string(#)), ',') }}", `1`},
		{"${{ toJSON(input) }}", `{"<": "&"}`},
		{"${{ '}}' }}${{", `""`},
		{"${{ let a = 1..10; reduce(a, #acc + #, 0) }}", `{}`},
		{"${{ env.HOME }}", `"x"`},
	} {
		f.Add(s.tmpl, s.input)
	}
	f.Fuzz(func(t *testing.T, tmpl, input string) {
		v := Vars{
			Input: json.RawMessage(input),
			Nodes: map[string]json.RawMessage{"p": json.RawMessage(`{"x": [1, 2]}`)},
			RunID: "run-1",
			Env:   map[string]string{"HOME": "/home/x"},
		}
		out, err := Expand(map[string]any{"k": tmpl, "list": []any{tmpl}}, v)
		if err != nil {
			var ee *ExprError
			if !errors.As(err, &ee) {
				t.Fatalf("error is %T, want *ExprError: %v", err, err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("error is not one line: %q", msg)
			}
			return
		}
		if HasExpr(map[string]any{"k": tmpl}) != strings.Contains(tmpl, "${{") {
			t.Fatalf("HasExpr disagrees with the template %q", tmpl)
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatalf("the result is not JSON: %v", err)
		}
		if len(b) > 4*maxValueBytes {
			t.Fatalf("the result is %d bytes", len(b))
		}
	})
}
