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
