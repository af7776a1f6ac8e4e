package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Failure says why a step goes to the DLQ.
type Failure struct {
	// Workflow and Node name the step; empty for a malformed message.
	Workflow, Node string
	// RunID of the step; empty for a malformed message.
	RunID string
	// Reason is one line: why the step stopped ("permanent error", "malformed: …").
	Reason string
	// Error is the last error's full text; the header keeps its first 4 KiB on one line.
	Error string
	// Attempts the node used (handler runs that ended in an error).
	Attempts int
	// Deliveries, when not zero, is how many times the step was delivered (the sweeper's
	// MaxDeliver count), kept in the workflow.HeaderDeliveries header.
	Deliveries uint64
	// Worker that moved it.
	Worker string
	// StreamSeq is the step's sequence in the steps stream; it makes the DLQ publish
	// idempotent (Nats-Msg-Id dlq.<seq>).
	StreamSeq uint64
	// Subject the step was delivered on.
	Subject string
	// At is when it failed (default now).
	At time.Time
	// MsgID, when set, replaces dlq.<StreamSeq> as the publish's Nats-Msg-Id (a trigger's
	// message has its sequence in another stream).
	MsgID string
	// Item is the for_each item's index, kept in the Jetflow-Item header; nil for a node.
	Item *int
}

// Publish stores body in the DLQ with the failure's headers and returns the entry's ID (its
// sequence in the DLQ stream). Publishing the same step twice stores one entry.
func Publish(ctx context.Context, js jetstream.JetStream, names workflow.Names, body []byte, f Failure) (uint64, error) {
	subject := names.DLQMalformedSubject()
	if f.Workflow != "" && f.Node != "" && workflow.ValidName(f.Workflow) && workflow.ValidName(f.Node) {
		subject = names.DLQSubject(f.Workflow, f.Node)
	}
	at := f.At
	if at.IsZero() {
		at = time.Now()
	}
	msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: body}
	msg.Header.Set(workflow.HeaderMsgID, "dlq."+strconv.FormatUint(f.StreamSeq, 10))
	if f.MsgID != "" {
		msg.Header.Set(workflow.HeaderMsgID, f.MsgID)
	}
	if f.RunID != "" {
		msg.Header.Set(workflow.HeaderRun, f.RunID)
	}
	if f.Node != "" {
		msg.Header.Set(workflow.HeaderNode, workflow.OneLine(f.Node, 200))
	}
	msg.Header.Set(workflow.HeaderReason, workflow.OneLine(f.Reason, 1000))
	msg.Header.Set(workflow.HeaderError, workflow.OneLine(f.Error, workflow.MaxErrorHeaderBytes))
	msg.Header.Set(workflow.HeaderAttempts, strconv.Itoa(f.Attempts))
	if f.Deliveries > 0 {
		msg.Header.Set(workflow.HeaderDeliveries, strconv.FormatUint(f.Deliveries, 10))
	}
	msg.Header.Set(workflow.HeaderOriginalSubject, workflow.OneLine(f.Subject, 500))
	msg.Header.Set(workflow.HeaderFailedAt, at.UTC().Format(time.RFC3339))
	msg.Header.Set(workflow.HeaderWorker, workflow.OneLine(f.Worker, 200))
	if f.Item != nil {
		msg.Header.Set(workflow.HeaderItem, strconv.Itoa(*f.Item))
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("publish to DLQ: %w", err)
	}
	return ack.Sequence, nil
}

// Entry is one message in the DLQ.
type Entry struct {
	ID              uint64    `json:"id"`
	Workflow        string    `json:"workflow"`
	Node            string    `json:"node"`
	RunID           string    `json:"run_id"`
	Reason          string    `json:"reason"`
	Attempts        int       `json:"attempts"`
	Deliveries      int       `json:"deliveries,omitempty"` // workflow.HeaderDeliveries; 0 unless the sweeper moved it
	Error           string    `json:"error"`
	FailedAt        time.Time `json:"failed_at"`
	Worker          string    `json:"worker,omitempty"`
	OriginalSubject string    `json:"original_subject,omitempty"`
	// Item is the for_each item the entry ran (header Jetflow-Item); nil for a node.
	Item *int   `json:"item,omitempty"`
	Body []byte `json:"-"`

	header nats.Header // the message's headers, for Show
}

// Filter selects entries; zero fields match everything.
type Filter struct {
	Workflow, Node, RunID string
	// Reason matches entries whose reason contains it.
	Reason string
	// Since keeps entries that failed at or after it.
	Since time.Time
	// Limit caps the number of entries (0: no cap).
	Limit int
}

func (f Filter) match(e *Entry) bool {
	return (f.Workflow == "" || e.Workflow == f.Workflow) &&
		(f.Node == "" || e.Node == f.Node) &&
		(f.RunID == "" || e.RunID == f.RunID) &&
		(f.Reason == "" || strings.Contains(e.Reason, f.Reason)) &&
		(f.Since.IsZero() || !e.FailedAt.Before(f.Since))
}

// List returns the entries matching f, oldest first.
func List(ctx context.Context, js jetstream.JetStream, names workflow.Names, f Filter) ([]*Entry, error) {
	s, err := stream(ctx, js, names)
	if err != nil {
		return nil, err
	}
	if s.CachedInfo().State.Msgs == 0 {
		return nil, nil
	}
	subject := names.DLQSubjects()[0]
	if f.Workflow != "" && f.Node != "" {
		subject = names.DLQSubject(f.Workflow, f.Node)
	} else if f.Workflow != "" {
		subject = strings.TrimSuffix(names.DLQSubject(f.Workflow, "x"), "x") + "*"
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if !f.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := f.Since
		cfg.OptStartTime = &since
	}
	c, err := s.OrderedConsumer(ctx, kvwatch.ReadNow(cfg))
	if err != nil {
		return nil, err
	}
	var out []*Entry
	err = each(c, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) bool {
		e := FromMsg(meta.Sequence.Stream, msg.Headers(), msg.Data())
		e.fromSubject(names, msg.Subject())
		if f.match(e) {
			out = append(out, e)
			if f.Limit > 0 && len(out) >= f.Limit {
				return false
			}
		}
		return true
	})
	return out, err
}

// each calls fn with every message an ordered consumer has to deliver now, in order, until
// fn returns false. It fetches in batches, without waiting for messages that are not there.
func each(c jetstream.Consumer, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	if info := c.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil
	}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return err
		}
		n, pending := 0, uint64(0)
		stop := false
		for msg := range batch.Messages() {
			n++
			if stop {
				continue // drain the batch
			}
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			pending = meta.NumPending
			stop = !fn(msg, meta)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if stop {
			return nil
		}
		if n == 0 {
			// Nothing ready at once: wait a moment for one more before calling it the end.
			msg, err := c.Next(jetstream.FetchMaxWait(time.Second))
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			if err != nil {
				return err
			}
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			pending = meta.NumPending
			if !fn(msg, meta) {
				return nil
			}
		}
		if pending == 0 {
			return nil
		}
	}
}

// fromSubject fills in the workflow and node of an entry whose body did not name them from
// the DLQ subject it is kept under.
func (e *Entry) fromSubject(names workflow.Names, subject string) {
	if e.Workflow != "" && e.Node != "" {
		return
	}
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(names.DLQSubject("x", "y"), "x.y"))
	wf, node, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || subject == names.DLQMalformedSubject() {
		return
	}
	if e.Workflow == "" {
		e.Workflow = wf
	}
	if e.Node == "" {
		e.Node = node
	}
}

// FromMsg reads an entry from a DLQ message's headers and body.
func FromMsg(seq uint64, h nats.Header, body []byte) *Entry {
	e := &Entry{
		ID:              seq,
		RunID:           h.Get(workflow.HeaderRun),
		Node:            h.Get(workflow.HeaderNode),
		Reason:          h.Get(workflow.HeaderReason),
		Error:           h.Get(workflow.HeaderError),
		Worker:          h.Get(workflow.HeaderWorker),
		OriginalSubject: h.Get(workflow.HeaderOriginalSubject),
		Body:            slices.Clone(body),
		header:          h,
	}
	e.Attempts, _ = strconv.Atoi(h.Get(workflow.HeaderAttempts))
	e.Deliveries, _ = strconv.Atoi(h.Get(workflow.HeaderDeliveries))
	e.FailedAt, _ = time.Parse(time.RFC3339, h.Get(workflow.HeaderFailedAt))
	if v, err := strconv.Atoi(h.Get(workflow.HeaderItem)); err == nil {
		e.Item = &v
	}
	if env, err := workflow.DecodeEnvelope(body); err == nil {
		e.Workflow = env.Workflow
		if e.Node == "" {
			e.Node = env.Node
		}
		if e.RunID == "" {
			e.RunID = env.RunID
		}
	}
	return e
}
