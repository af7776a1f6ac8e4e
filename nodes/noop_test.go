package nodes_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/jetflow-dev/jetflow/nodes"
)

func TestNoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		with map[string]any
		want any
	}{
		{"nil with", nil, nil},
		{"no output", map[string]any{}, nil},
		{"other settings only", map[string]any{"note": "x"}, nil},
		{"null output", map[string]any{"output": nil}, nil},
		{"object", map[string]any{"output": map[string]any{"ok": true, "n": float64(1)}}, map[string]any{"ok": true, "n": float64(1)}},
		{"list", map[string]any{"output": []any{"a", uint64(2)}}, []any{"a", uint64(2)}},
		{"string", map[string]any{"output": "done"}, "done"},
		{"number", map[string]any{"output": float64(3.5)}, float64(3.5)},
		{"false", map[string]any{"output": false}, false},
		{"raw JSON", map[string]any{"output": json.RawMessage(`{"raw":1}`)}, json.RawMessage(`{"raw":1}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStep(tt.with, `{"input":{"ignored":true}}`)
			s.Type = "noop"
			out, err := nodes.Noop(t.Context(), s)
			if err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if !reflect.DeepEqual(out, tt.want) {
				t.Errorf("output = %#v, want %#v", out, tt.want)
			}
		})
	}
}
