// Package fastjson writes the JSON of jetflow's hot paths (the step envelope, node states,
// node inputs) by hand, byte for byte as encoding/json would, for the common case where
// nothing needs escaping. Every function reports false when it cannot promise that; the
// caller then uses encoding/json. The callers' fuzz tests compare both ways.
package fastjson

import (
	"bytes"
	"encoding/json"
)

// PlainString reports whether encoding/json writes s as is between quotes: printable ASCII
// with no quote, backslash or HTML character.
func PlainString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// AppendRaw appends raw as encoding/json writes a json.RawMessage (compacted); false when
// raw is not valid JSON or holds what encoding/json would escape (<, >, &, U+2028, U+2029).
func AppendRaw(b []byte, raw []byte) ([]byte, bool) {
	if bytes.ContainsAny(raw, "<>&\u2028\u2029") {
		return b, false
	}
	buf := bytes.NewBuffer(b)
	if json.Compact(buf, raw) != nil {
		return b, false
	}
	return buf.Bytes(), true
}
