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

// LeadingField returns the value of field name when obj is a JSON object whose first field
// is name, as encoding/json writes a struct whose first field that is ({"name":value,…}, no
// space before the value), without reading the rest of obj. false when obj does not start so
// or the value is not complete, valid JSON.
func LeadingField(obj []byte, name string) (json.RawMessage, bool) {
	if len(obj) < len(name)+5 || obj[0] != '{' || obj[1] != '"' || string(obj[2:2+len(name)]) != name ||
		obj[2+len(name)] != '"' || obj[3+len(name)] != ':' {
		return nil, false
	}
	v := obj[4+len(name):]
	end, ok := valueEnd(v)
	if !ok || end >= len(v) || (v[end] != ',' && v[end] != '}') || !json.Valid(v[:end]) {
		return nil, false
	}
	return json.RawMessage(v[:end]), true
}

// valueEnd returns the length of the JSON value at the start of b (not checked for
// validity beyond its nesting and strings); false when b ends first or starts with space.
func valueEnd(b []byte) (int, bool) {
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
				if depth == 0 {
					return i + 1, true
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return i, i > 0
			}
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case c == ',' && depth == 0:
			return i, i > 0
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if depth == 0 {
				return 0, false
			}
		}
	}
	return 0, false
}
