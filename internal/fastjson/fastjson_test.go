package fastjson

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAppendRaw checks AppendRaw and PlainString against encoding/json, byte for byte.
func FuzzAppendRaw(f *testing.F) {
	for _, s := range []string{`null`, `{"a": [1, 2.5, "x"]}`, `"<b>"`, `"\u2028"`, `{"a":`, ` 1 `, `"é\n"`} {
		f.Add([]byte(s), s)
	}
	f.Fuzz(func(t *testing.T, raw []byte, s string) {
		if got, ok := AppendRaw([]byte("x"), raw); ok {
			std, err := json.Marshal(json.RawMessage(raw))
			if err != nil || !bytes.Equal(got, append([]byte("x"), std...)) {
				t.Fatalf("AppendRaw(%q) = %q; encoding/json %q (%v)", raw, got, std, err)
			}
		}
		if PlainString(s) {
			std, _ := json.Marshal(s)
			if string(std) != `"`+s+`"` {
				t.Fatalf("PlainString(%q) but encoding/json writes %s", s, std)
			}
		}
	})
}

// FuzzLeadingField checks LeadingField against encoding/json on valid objects that name the
// field once (encoding/json keeps the last of duplicated names; the engine never writes any).
func FuzzLeadingField(f *testing.F) {
	for _, s := range []string{`{"input":{"a":[1,"}"]},"nodes":{}}`, `{"input":null}`, `{"input":"x\"}","n":1}`,
		`{"input": 1}`, `{"nodes":{},"input":2}`, `{"input":[1,2`, `{"input":tru}`, `{"input":1 ,"b":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, obj []byte) {
		got, ok := LeadingField(obj, "input")
		if !ok || !json.Valid(obj) || bytes.Count(obj, []byte(`"input"`)) != 1 {
			return
		}
		var std struct {
			Input json.RawMessage `json:"input"`
		}
		if err := json.Unmarshal(obj, &std); err != nil || !bytes.Equal(got, std.Input) {
			t.Fatalf("LeadingField(%q) = %q; encoding/json %q (%v)", obj, got, std.Input, err)
		}
	})
}

func TestLeadingField(t *testing.T) {
	for _, c := range []struct {
		obj, want string
		ok        bool
	}{
		{`{"input":{"a":[1,"}"]},"nodes":{}}`, `{"a":[1,"}"]}`, true},
		{`{"input":"x\"}","n":1}`, `"x\"}"`, true},
		{`{"input":null}`, `null`, true},
		{`{"input":12.5e3,"nodes":{"a":1}}`, `12.5e3`, true},
		{`{"input": 1}`, ``, false},
		{`{"nodes":{},"input":2}`, ``, false},
		{`{"input":[1,2`, ``, false},
		{`{"input":tru}`, ``, false},
	} {
		got, ok := LeadingField([]byte(c.obj), "input")
		if ok != c.ok || string(got) != c.want {
			t.Errorf("LeadingField(%s) = %s, %v; want %s, %v", c.obj, got, ok, c.want, c.ok)
		}
	}
}
