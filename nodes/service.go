package nodes

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/tracing"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Headers of the NATS services protocol's error replies.
const (
	serviceErrorCode = "Nats-Service-Error-Code"
	serviceError     = "Nats-Service-Error"
)

// Service returns the handler of the service node type: a NATS request to with.subject
// through nc, the node input as the body and the headers Jetflow-Run, Jetflow-Node,
// Jetflow-Attempt, Idempotency-Key and traceparent; the JSON reply is the output. A reply
// with Nats-Service-Error-Code 400–499 is permanent, 429 a RetryAfter (its Retry-After
// header, seconds or an HTTP date), 500–599 retryable; no responders and timeouts are
// retryable; a reply that is not JSON is permanent. with.timeout bounds the request
// (default: the node's timeout).
func Service(nc *nats.Conn) consumer.HandlerFunc {
	return func(ctx context.Context, s *consumer.Step) (any, error) {
		subject, _ := s.With["subject"].(string)
		if subject == "" {
			return nil, consumer.Permanent(errors.New("service: with.subject is missing"))
		}
		if ts, ok := s.With["timeout"].(string); ok && ts != "" {
			d, err := time.ParseDuration(ts)
			if err != nil || d <= 0 {
				return nil, consumer.Permanent(fmt.Errorf("service: with.timeout %q must be a positive duration", ts))
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		msg := nats.NewMsg(subject)
		msg.Data = s.Input
		msg.Header.Set(workflow.HeaderRun, s.RunID)
		msg.Header.Set(workflow.HeaderNode, s.Node)
		msg.Header.Set(workflow.HeaderAttempt, strconv.Itoa(s.Attempt))
		msg.Header.Set(workflow.HeaderIdempotencyKey, s.IdempotencyKey)
		tracing.Inject(ctx, msg.Header)
		start := time.Now()
		resp, err := nc.RequestMsgWithContext(ctx, msg)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("service %s: no responders (is the service running?)", subject)
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
