package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jetflow-dev/jetflow/internal/fastjson"
)

// EnvelopeVersion is the only envelope version this code reads and writes.
const EnvelopeVersion = 1

// Header names used on step and DLQ messages.
const (
	HeaderMsgID          = "Nats-Msg-Id"
	HeaderSchedule       = "Nats-Schedule"
	HeaderScheduleTarget = "Nats-Schedule-Target"
	HeaderScheduleTZ     = "Nats-Schedule-Time-Zone"
	// HeaderAttempt and HeaderIdempotencyKey go on the requests of http and service nodes.
	HeaderAttempt         = "Jetflow-Attempt"
	HeaderIdempotencyKey  = "Idempotency-Key"
	HeaderRun             = "Jetflow-Run"
	HeaderNode            = "Jetflow-Node"
	HeaderReason          = "Jetflow-Reason"
	HeaderError           = "Jetflow-Error"
	HeaderAttempts        = "Jetflow-Attempts"
	HeaderOriginalSubject = "Jetflow-Original-Subject"
	HeaderFailedAt        = "Jetflow-Failed-At"
	HeaderWorker          = "Jetflow-Worker"
	// HeaderDeliveries is the DLQ header the MaxDeliver sweeper adds: how many times the
	// server delivered the step before giving up. Jetflow-Attempts stays the node's attempts
	// (handler runs that ended in an error), which a crash loop does not raise.
	HeaderDeliveries  = "Jetflow-Deliveries"
	HeaderTraceparent = "traceparent"
	// HeaderItem is the DLQ header naming the for_each item a dead step ran.
	HeaderItem             = "Jetflow-Item"
	MaxErrorHeaderBytes    = 4096
	DispatchFirst          = "d"
	dispatchSchedulePrefix = 's'
	dispatchReplayPrefix   = 'r'
)

// ErrMalformed marks an envelope that cannot be decoded or is invalid.
var ErrMalformed = errors.New("malformed")

// Envelope is the body of a step message.
type Envelope struct {
	V        int             `json:"v"`
	RunID    string          `json:"run_id"`
	Workflow string          `json:"workflow"`
	Def      string          `json:"def"`
	Node     string          `json:"node"`
	Input    json.RawMessage `json:"input"`
	Dispatch string          `json:"dispatch"`
	// Item is the index of the for_each item this step runs; nil for a node's own step.
	Item *int `json:"item,omitempty"`
	// Value is the for_each item's value (or a blob reference to it).
	Value json.RawMessage `json:"value,omitempty"`
}

// IsItem reports whether the envelope is a step of one for_each item.
func (e *Envelope) IsItem() bool { return e.Item != nil }

// Index is the item's index; -1 for a node's own step.
func (e *Envelope) Index() int {
	if e.Item == nil {
		return -1
	}
	return *e.Item
}

// DispatchSchedule is the dispatch token of a step woken from a long wait before attempt.
func DispatchSchedule(attempt int) string { return "s" + strconv.Itoa(attempt) }

// DispatchReplay is the dispatch token of a step replayed from DLQ entry seq.
func DispatchReplay(seq uint64) string { return "r" + strconv.FormatUint(seq, 10) }

// validDispatch reports whether d is d, s<n> or r<n>.
func validDispatch(d string) bool {
	if d == DispatchFirst {
		return true
	}
	if len(d) < 2 || (d[0] != dispatchSchedulePrefix && d[0] != dispatchReplayPrefix) {
		return false
	}
	if len(d) > 2 && d[1] == '0' {
		return false // one spelling per number: s1, not s01
	}
	_, err := strconv.ParseUint(d[1:], 10, 64)
	return err == nil
}

// WakeMsgID is the Nats-Msg-Id of the wake of a parked node (a subflow's child ended, a wait
// node's signal came): one per dispatch, so every end writer may send it.
func (e *Envelope) WakeMsgID() string { return e.MsgID() + wakeSuffix }

// IsWake reports whether a step message with this Nats-Msg-Id is a wake (see WakeMsgID), not
// the node's own step: it carries no input and only finishes a node that parked.
func IsWake(msgID string) bool { return strings.HasSuffix(msgID, wakeSuffix) }

const wakeSuffix = ".w"

// MsgID is the Nats-Msg-Id a step message with this envelope is published with.
func (e *Envelope) MsgID() string {
	base := e.RunID + "." + e.Node
	if e.Item != nil {
		base += ".i" + strconv.Itoa(*e.Item)
	}
	if e.Dispatch == DispatchFirst || e.Dispatch == "" {
		return base
	}
	return base + "." + e.Dispatch
}

// Encode returns the JSON body of the envelope.
func (e *Envelope) Encode() ([]byte, error) {
	c := *e
	c.V = EnvelopeVersion
	if c.Dispatch == "" {
		c.Dispatch = DispatchFirst
	}
	if len(c.Input) == 0 {
		c.Input = json.RawMessage("null")
	}
	if b, ok := c.appendCanonical(); ok {
		return b, nil
	}
	return json.Marshal(&c)
}

// The canonical envelope layout: the order encoding/json writes the fields in. Every step
// is encoded once and decoded at least once, so the common case skips reflection: when
// every string field is a token ([A-Za-z0-9_-]: nothing to escape), the envelope is written, and
// read back, by hand; anything else takes encoding/json. FuzzEnvelopeFastPath checks that
// both ways agree.
const (
	canonRunID    = `{"v":1,"run_id":"`
	canonWorkflow = `","workflow":"`
	canonDef      = `","def":"`
	canonNode     = `","node":"`
	canonInput    = `","input":`
	canonDispatch = `,"dispatch":"`
	canonEnd      = `"}`
)

// appendCanonical writes c in the canonical layout, with its input compacted; false when a
// field needs escaping or the input is not valid JSON (encoding/json then decides).
func (c *Envelope) appendCanonical() ([]byte, bool) {
	if c.V != 1 || c.Value != nil || !validToken(c.RunID) || !validToken(c.Workflow) || !validToken(c.Def) || !validToken(c.Node) || !validToken(c.Dispatch) {
		return nil, false
	}
	b := make([]byte, 0, len(canonRunID)+len(c.RunID)+len(canonWorkflow)+len(c.Workflow)+len(canonDef)+len(c.Def)+
		len(canonNode)+len(c.Node)+len(canonInput)+len(c.Input)+len(canonDispatch)+len(c.Dispatch)+len(canonEnd))
	for _, s := range []string{canonRunID, c.RunID, canonWorkflow, c.Workflow, canonDef, c.Def, canonNode, c.Node, canonInput} {
		b = append(b, s...)
	}
	b, ok := fastjson.AppendRaw(b, c.Input)
	if !ok {
		return nil, false
	}
	for _, s := range []string{canonDispatch, c.Dispatch} {
		b = append(b, s...)
	}
	if c.Item != nil {
		b = append(b, canonItem...)
		b = strconv.AppendInt(b, int64(*c.Item), 10)
		return append(b, '}'), true
	}
	return append(b, canonEnd...), true
}

// canonItem starts a for_each item's index, the field after the dispatch.
const canonItem = `","item":`

// cutItem cuts a trailing item index (`,"item":<n>}` after the dispatch) off a canonical
// body: it returns the body as it would end without it (`…"}`) and the index, or b itself
// and nil.
func cutItem(b []byte) ([]byte, *int) {
	i := bytes.LastIndex(b, []byte(canonItem))
	if i < 0 || len(b) < i+len(canonItem)+2 || b[len(b)-1] != '}' {
		return b, nil
	}
	digits := b[i+len(canonItem) : len(b)-1]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return b, nil
		}
	}
	if len(digits) > 1 && digits[0] == '0' || len(digits) > 6 {
		return b, nil
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil {
		return b, nil
	}
	out := make([]byte, i+len(canonEnd))
	copy(out, b[:i])
	copy(out[i:], canonEnd)
	return out, &n
}

// decodeCanonical reads an envelope in the canonical layout; false when b is laid out
// otherwise (encoding/json then reads it).
func decodeCanonical(b []byte) (*Envelope, bool) {
	var e Envelope
	b, e.Item = cutItem(b)
	rest, ok := bytes.CutPrefix(b, []byte(canonRunID))
	if !ok {
		return nil, false
	}
	for _, f := range []struct {
		dst *string
		sep string
	}{{&e.RunID, canonWorkflow}, {&e.Workflow, canonDef}, {&e.Def, canonNode}, {&e.Node, canonInput}} {
		i := bytes.IndexByte(rest, '"')
		if i < 0 || !bytes.HasPrefix(rest[i:], []byte(f.sep)) {
			return nil, false
		}
		if *f.dst = string(rest[:i]); !validToken(*f.dst) {
			return nil, false
		}
		rest = rest[i+len(f.sep):]
	}
	// The input is everything up to the dispatch, the last field: a token ([A-Za-z0-9_-],
	// which JSON writes as is) holds no quote, so the last `,"dispatch":"` is the separator.
	rest, ok = bytes.CutSuffix(rest, []byte(canonEnd))
	i := bytes.LastIndex(rest, []byte(canonDispatch))
	if !ok || i < 0 {
		return nil, false
	}
	input, dispatch := rest[:i], string(rest[i+len(canonDispatch):])
	if !validToken(dispatch) || len(input) == 0 || isSpace(input[0]) || isSpace(input[len(input)-1]) || !json.Valid(input) {
		return nil, false
	}
	e.V, e.Input, e.Dispatch = 1, bytes.Clone(input), dispatch
	return &e, true
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// DecodeEnvelope parses and checks a step message body. Every error wraps ErrMalformed and
// says what was wrong in one line.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if e, ok := decodeCanonical(b); ok {
		return e.check()
	}
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON envelope: %s", ErrMalformed, oneLine(err.Error(), 200))
	}
	return e.check()
}

// check validates a decoded envelope.
func (e *Envelope) check() (*Envelope, error) {
	switch {
	case e.V != EnvelopeVersion:
		return nil, fmt.Errorf("%w: envelope version %d, want %d", ErrMalformed, e.V, EnvelopeVersion)
	case !ValidRunID(e.RunID):
		return nil, fmt.Errorf("%w: bad run_id %q", ErrMalformed, oneLine(e.RunID, 80))
	case !ValidName(e.Workflow):
		return nil, fmt.Errorf("%w: bad workflow name %q", ErrMalformed, oneLine(e.Workflow, 80))
	case !ValidName(e.Node):
		return nil, fmt.Errorf("%w: bad node name %q", ErrMalformed, oneLine(e.Node, 80))
	case !validHash(e.Def):
		return nil, fmt.Errorf("%w: bad definition hash %q", ErrMalformed, oneLine(e.Def, 80))
	case !validDispatch(e.Dispatch):
		return nil, fmt.Errorf("%w: bad dispatch %q", ErrMalformed, oneLine(e.Dispatch, 80))
	case e.Item != nil && (*e.Item < 0 || *e.Item >= MaxItems):
		return nil, fmt.Errorf("%w: bad item index %d", ErrMalformed, *e.Item)
	}
	if len(e.Input) == 0 {
		e.Input = json.RawMessage("null")
	}
	return e, nil
}

// OneLine squeezes s onto one line of at most max bytes, marking a cut with '…'.
func OneLine(s string, max int) string { return oneLine(s, max) }

func oneLine(s string, max int) string {
	b := make([]byte, 0, min(len(s), max+4))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || c == '\r' || c == '\t' {
			if !space && len(b) > 0 {
				b = append(b, ' ')
			}
			space = true
			continue
		}
		if c < 0x20 || c == 0x7f {
			continue
		}
		space = false
		b = append(b, c)
	}
	if len(b) > max {
		cut := max
		for cut > 0 && b[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		return string(b[:cut]) + "…"
	}
	return string(b)
}
