package checkpoint

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/jetflow-dev/jetflow/internal/fastjson"
)

// appendJSON writes n as encoding/json would, byte for byte, without reflection: a node
// state is written at least once per step. It reports false when a string or raw value
// needs escaping, a raw value is not valid JSON or a time is out of JSON's range; the
// caller then uses encoding/json. FuzzNodeJSON checks both ways agree.
func (n *Node) appendJSON(b []byte) ([]byte, bool) {
	ok := true
	// name starts a field: ,"key":
	name := func(key string) {
		b = append(b, ',', '"')
		b = append(b, key...)
		b = append(b, `":`...)
	}
	str := func(key, s string, always bool) {
		if s == "" && !always {
			return
		}
		if !fastjson.PlainString(s) {
			ok = false
			return
		}
		name(key)
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
	}
	num := func(key string, v uint64) {
		if v != 0 {
			name(key)
			b = strconv.AppendUint(b, v, 10)
		}
	}
	signed := func(key string, v int) {
		if v != 0 {
			name(key)
			b = strconv.AppendInt(b, int64(v), 10)
		}
	}
	at := func(key string, t time.Time) {
		if t.IsZero() {
			return
		}
		if y := t.Year(); y < 0 || y >= 10000 {
			ok = false
			return
		}
		name(key)
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	raw := func(key string, r json.RawMessage) {
		if len(r) == 0 {
			return
		}
		name(key)
		var fine bool
		if b, fine = fastjson.AppendRaw(b, r); !fine {
			ok = false
		}
	}

	if !fastjson.PlainString(n.Status) {
		return nil, false
	}
	b = append(b, `{"status":"`...)
	b = append(b, n.Status...)
	b = append(b, `","attempts":`...)
	b = strconv.AppendInt(b, int64(n.Attempts), 10)
	signed("crashes", n.Crashes)
	num("delivery", n.Delivery)
	num("seq", n.Seq)
	str("dispatch", n.Dispatch, true)
	at("not_before", n.NotBefore)
	str("last_error", n.LastError, false)
	raw("output", n.Output)
	if n.Fallback {
		b = append(b, `,"fallback":true`...)
	}
	str("worker", n.Worker, false)
	at("started_at", n.StartedAt)
	at("ended_at", n.EndedAt)
	signed("replays", n.Replays)
	signed("sched", n.Sched)
	raw("input", n.Input)
	num("edited_from", n.EditedFrom)
	num("replayed_from", n.ReplayedFrom)
	str("reason", n.Reason, false)
	num("dlq_seq", n.DLQSeq)
	if it := n.Items; it != nil {
		name("items")
		var fine bool
		if b, fine = it.appendJSON(b); !fine {
			ok = false
		}
	}
	str("child", n.Child, false)
	str("signal", n.Signal, false)
	b = append(b, '}')
	return b, ok
}

// appendJSON writes it as encoding/json would; false when a value needs encoding/json.
func (it *Items) appendJSON(b []byte) ([]byte, bool) {
	b = append(b, `{"list":`...)
	if len(it.List) == 0 {
		b = append(b, "null"...)
	} else {
		var ok bool
		if b, ok = fastjson.AppendRaw(b, it.List); !ok {
			return b, false
		}
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"count", it.Count}, {"done", it.Done}, {"dead", it.Dead}, {"next", it.Next}} {
		b = append(b, ',', '"')
		b = append(b, f.key...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, int64(f.v), 10)
	}
	list := func(key string, rs []Release) bool {
		if len(rs) == 0 {
			return true
		}
		b = append(b, ',', '"')
		b = append(b, key...)
		b = append(b, `":[`...)
		for i, r := range rs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"i":`...)
			b = strconv.AppendInt(b, int64(r.Item), 10)
			b = append(b, `,"by":`...)
			b = strconv.AppendInt(b, int64(r.By), 10)
			if r.Dispatch != "" {
				if !fastjson.PlainString(r.Dispatch) {
					return false
				}
				b = append(b, `,"d":"`...)
				b = append(b, r.Dispatch...)
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, ']')
		return true
	}
	if !list("inflight", it.Inflight) || !list("requeue", it.Requeue) {
		return b, false
	}
	return append(b, '}'), true
}

// marshalValue is json.Marshal with the fast path for node states.
func marshalValue(v any) ([]byte, error) {
	if n, ok := v.(*Node); ok {
		if b, ok := n.appendJSON(make([]byte, 0, 256)); ok {
			return b, nil
		}
	}
	return json.Marshal(v)
}
