package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// EnvelopeVersion is the only envelope version this code reads and writes.
const EnvelopeVersion = 1

// Header names used on step and DLQ messages.
const (
	HeaderMsgID            = "Nats-Msg-Id"
	HeaderSchedule         = "Nats-Schedule"
	HeaderScheduleTarget   = "Nats-Schedule-Target"
	HeaderRun              = "Jetflow-Run"
	HeaderNode             = "Jetflow-Node"
	HeaderReason           = "Jetflow-Reason"
	HeaderError            = "Jetflow-Error"
	HeaderAttempts         = "Jetflow-Attempts"
	HeaderOriginalSubject  = "Jetflow-Original-Subject"
	HeaderFailedAt         = "Jetflow-Failed-At"
	HeaderWorker           = "Jetflow-Worker"
	HeaderTraceparent      = "traceparent"
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

// MsgID is the Nats-Msg-Id a step message with this envelope is published with.
func (e *Envelope) MsgID() string {
	if e.Dispatch == DispatchFirst || e.Dispatch == "" {
		return e.RunID + "." + e.Node
	}
	return e.RunID + "." + e.Node + "." + e.Dispatch
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
	return json.Marshal(&c)
}

// DecodeEnvelope parses and checks a step message body. Every error wraps ErrMalformed and
// says what was wrong in one line.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON envelope: %s", ErrMalformed, oneLine(err.Error(), 200))
	}
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
	}
	if len(e.Input) == 0 {
		e.Input = json.RawMessage("null")
	}
	return &e, nil
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
