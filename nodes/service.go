package nodes

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Headers of the NATS services protocol's error replies, and jetflow's progress headers.
const (
	serviceErrorCode = "Nats-Service-Error-Code"
	serviceError     = "Nats-Service-Error"

	// HeaderProgress is the request header naming the subject a service publishes
	// heartbeats and progress to while it works on a step.
	HeaderProgress = "Jetflow-Progress"
	// HeaderMoreTime is a heartbeat's header asking for a longer silence than with.timeout
	// before the next message (a Go duration, or seconds).
	HeaderMoreTime = "Jetflow-More-Time"
	// HeaderResume is the request header of a retry carrying the last progress the service
	// reported (JSON) in an earlier attempt.
	HeaderResume = "Jetflow-Resume"

	// maxServiceProgress is the largest heartbeat body saved as progress: it travels back
	// to the service as a header.
	maxServiceProgress = 32 << 10
)

// Service returns the handler of the service node type: a NATS request to with.subject
// through nc, the node input as the body and the headers Jetflow-Run, Jetflow-Node,
// Jetflow-Attempt, Idempotency-Key and traceparent; the JSON reply is the output. A reply
// with Nats-Service-Error-Code 400–499 is permanent, 429 a RetryAfter (its Retry-After
// header, seconds or an HTTP date), 500–599 retryable; no responders and timeouts are
// retryable; a reply that is not JSON is permanent.
//
// While it works, a service may publish to the subject in the request's Jetflow-Progress
// header: each message is a heartbeat. with.timeout (default: the node's timeout) is the
// longest silence allowed: the request and each heartbeat start it again, and a heartbeat
// with a Jetflow-More-Time header waits that long instead. The node's timeout bounds the
// whole call. A heartbeat whose body is JSON (at most 32 KiB) is saved as the step's
// progress, and a later attempt carries the last one in its Jetflow-Resume header.
func Service(nc *nats.Conn) consumer.HandlerFunc {
	hb := &heartbeats{nc: nc}
	return func(ctx context.Context, s *consumer.Step) (any, error) {
		subject, _ := s.With["subject"].(string)
		if subject == "" {
			return nil, consumer.Permanent(errors.New("service: with.subject is missing"))
		}
		var silence time.Duration // 0: only the node's timeout
		if ts, ok := s.With["timeout"].(string); ok && ts != "" {
			d, err := time.ParseDuration(ts)
			if err != nil || d <= 0 {
				return nil, consumer.Permanent(fmt.Errorf("service: with.timeout %q must be a positive duration", ts))
			}
			silence = d
		}
		msg := nats.NewMsg(subject)
		msg.Data = s.Input
		msg.Header.Set(workflow.HeaderRun, s.RunID)
		msg.Header.Set(workflow.HeaderNode, s.Node)
		msg.Header.Set(workflow.HeaderAttempt, strconv.Itoa(s.Attempt))
		msg.Header.Set(workflow.HeaderIdempotencyKey, s.IdempotencyKey)
		if s.Resumed() {
			var last json.RawMessage
			if err := s.Progress(ctx, &last); err == nil && len(last) > 0 {
				msg.Header.Set(HeaderResume, string(last))
			}
		}
		tracing.Inject(ctx, msg.Header)
		call, err := hb.watch(ctx, s, silence)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", subject, err)
		}
		defer call.done()
		msg.Header.Set(HeaderProgress, call.subject)
		start := time.Now()
		resp, err := nc.RequestMsgWithContext(call.ctx, msg)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("service %s: no responders (is the service running?)", subject)
		case errors.Is(context.Cause(call.ctx), errSilent):
			return nil, fmt.Errorf("service %s: no reply or heartbeat for %s", subject, call.waited())
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			return nil, fmt.Errorf("service %s: no reply within %s", subject, time.Since(start).Round(time.Millisecond))
		case err != nil:
			return nil, fmt.Errorf("service %s: %w", subject, err)
		}
		if code := resp.Header.Get(serviceErrorCode); code != "" {
			n, _ := strconv.Atoi(code)
			desc := workflow.OneLine(cmp.Or(resp.Header.Get(serviceError), string(resp.Data)), 500)
			e := fmt.Errorf("service %s: error %s: %s", subject, code, desc)
			switch {
			case n == 429:
				d, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
				return nil, consumer.RetryAfter(d, e)
			case n >= 400 && n < 500:
				return nil, consumer.Permanent(e)
			}
			return nil, e // 5xx and anything else: retryable
		}
		body := resp.Data
		if len(strings.TrimSpace(string(body))) == 0 || !json.Valid(body) {
			return nil, consumer.Permanent(fmt.Errorf("service %s: the reply is not JSON (%d bytes): %s", subject, len(body), workflow.OneLine(string(body), 200)))
		}
		return json.RawMessage(body), nil
	}
}

// errSilent is the cause of a call cancelled because the service was silent too long.
var errSilent = errors.New("the service was silent too long")

// heartbeats receives the heartbeats of every call of one Service handler on one wildcard
// subscription, made on the first call, and routes each to its call by the last token.
type heartbeats struct {
	nc     *nats.Conn
	once   sync.Once
	err    error
	prefix string   // "<inbox>."
	calls  sync.Map // token → *serviceCall
	next   atomic.Uint64
}

// serviceCall is one request waiting for its reply, with its silence timer.
type serviceCall struct {
	ctx     context.Context
	subject string
	step    *consumer.Step
	parent  context.Context
	timer   *time.Timer   // nil without a silence limit
	mu      sync.Mutex    // guards window and ended, and is held through a progress save
	window  time.Duration // the silence being waited for
	ended   bool          // done was called: heartbeats are ignored
	done    func()
}

// watch registers a call: its context is cancelled with errSilent after silence (0: never)
// without a message on its subject.
func (h *heartbeats) watch(ctx context.Context, s *consumer.Step, silence time.Duration) (*serviceCall, error) {
	h.once.Do(func() {
		h.prefix = h.nc.NewInbox() + "."
		_, h.err = h.nc.Subscribe(h.prefix+"*", h.receive)
	})
	if h.err != nil {
		return nil, fmt.Errorf("subscribe to heartbeats: %w", h.err)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	token := strconv.FormatUint(h.next.Add(1), 36)
	c := &serviceCall{ctx: cctx, subject: h.prefix + token, step: s, parent: ctx, window: silence}
	if silence > 0 {
		c.timer = time.AfterFunc(silence, func() { cancel(errSilent) })
	}
	h.calls.Store(token, c)
	c.done = func() {
		h.calls.Delete(token)
		c.mu.Lock()
		c.ended = true
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
		cancel(context.Canceled)
	}
	return c, nil
}

// receive handles one heartbeat: it restarts its call's silence timer (for Jetflow-More-Time
// when given) and saves a JSON body as the step's progress.
func (h *heartbeats) receive(m *nats.Msg) {
	v, ok := h.calls.Load(strings.TrimPrefix(m.Subject, h.prefix))
	if !ok {
		return // a late heartbeat of a call that ended
	}
	c := v.(*serviceCall)
	// c.mu is held through the save, so that done, which takes it, returns only once no
	// save is under way: the node's progress is not written after it completed.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	if c.timer != nil {
		if d, ok := parseMoreTime(m.Header.Get(HeaderMoreTime)); ok {
			c.window = d
		}
		c.timer.Reset(c.window)
	}
	body := bytes.TrimSpace(m.Data)
	if len(body) == 0 || len(body) > maxServiceProgress || !json.Valid(body) {
		return
	}
	var compact bytes.Buffer
	if json.Compact(&compact, body) == nil {
		// A save that fails (the run cancelled, KV unreachable) loses only this progress;
		// it is bounded, as every call's heartbeats wait behind it.
		ctx, cancel := context.WithTimeout(c.parent, 5*time.Second)
		defer cancel()
		_ = c.step.SaveProgress(ctx, json.RawMessage(compact.Bytes()))
	}
}

// waited is the silence the call was cut after.
func (c *serviceCall) waited() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.window
}

// parseMoreTime reads a Jetflow-More-Time value: a Go duration ("90s", "5m") or seconds.
func parseMoreTime(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, true
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
		return time.Duration(n * float64(time.Second)), true
	}
	return 0, false
}
