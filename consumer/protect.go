package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jetflow-dev/jetflow/breaker"
	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// expandWith evaluates ${{ }} expressions in the node's settings. An expression that cannot
// be evaluated is a permanent error: the definition or the data is wrong, not the dependency.
func (s *stepRun) expandWith(input json.RawMessage) (map[string]any, error) {
	if !workflow.HasExpr(s.node.With) {
		return s.node.With, nil
	}
	var in producer.NodeInput
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, Permanent(fmt.Errorf("node input is not an object: %w", err))
	}
	vars := workflow.Vars{Input: in.Input, Nodes: in.Nodes, RunID: s.env.RunID, Env: s.w.env}
	if s.env.IsItem() {
		vars.Item, vars.Index = s.itemValue(), s.env.Index()
	}
	with, err := workflow.Expand(s.node.With, vars)
	if err != nil {
		return nil, Permanent(err)
	}
	return with, nil
}

// breakerSettings returns the breaker settings of the node's dependency key: the node's
// breaker block, or an http node's default breaker keyed by the URL's host. A node with
// neither has only a cool-down key, <workflow>.<node> (CoolDownOnly): a Retry-After from
// its handler closes it to every worker for a while, and nothing else does. ok is false for
// such a node while no key at all is tripped: then there is nothing to check.
func (s *stepRun) breakerSettings(with map[string]any) (bs breaker.Settings, ok bool) {
	b := s.node.Breaker
	if b == nil && s.node.Type != "http" && s.node.Type != workflow.ServiceType {
		if s.w.breakers == nil || !s.w.breakers.Tripped() {
			return breaker.Settings{}, false
		}
		return breaker.Settings{Key: s.defaultKey(), CoolDownOnly: true}, true
	}
	if b == nil {
		b = &workflow.Breaker{}
	}
	key := b.Key
	switch {
	case key != "":
	case b.Scope == "type":
		key = typeKey(s.node.Type)
	case s.node.Type == "http":
		if u, err := url.Parse(fmt.Sprint(with["url"])); err == nil && u.Host != "" {
			key = u.Host
		}
	case s.node.Type == workflow.ServiceType:
		if subj, _ := with["subject"].(string); subj != "" {
			key = "service:" + subj // one breaker per service, whichever workflows call it
		}
	}
	if key == "" {
		key = s.defaultKey()
	}
	bs = breaker.Settings{
		Key:                 key,
		ConsecutiveFailures: uint32(b.ConsecutiveFailures),
		FailureRatio:        b.FailureRatio,
		MinRequests:         uint32(b.MinRequests),
		OpenFor:             b.OpenFor.D(),
		HalfOpenRequests:    uint32(b.HalfOpenRequests),
	}
	if b.Scope == "type" {
		bs.PauseType = s.node.Type
	}
	return bs, true
}

// defaultKey is the node's dependency key when it names none: <workflow>.<node>, for its
// breaker, its cool-downs and its rate limit.
func (s *stepRun) defaultKey() string { return s.env.Workflow + "." + s.env.Node }

// typeKey is the default breaker key of a breaker with scope "type".
func typeKey(nodeType string) string { return "type=" + nodeType }

// gate is step 3: it expands the node's settings, then applies its breaker and rate limit.
// It reports handled when the delivery was dealt with instead of running the handler:
// deferred without spending an attempt, run by a fallback while the breaker is open, or
// dead-lettered for settings that cannot be expanded. Otherwise s.ticket (nil for a node
// with no breaker to ask) waits for the handler's outcome. The breaker goes first: a step
// that an open key defers takes no token from the rate limit. It runs after step 2's checks,
// so a deferral never erases a crash count, and a copy never runs a fallback.
func (s *stepRun) gate(ctx context.Context) (handled bool, err error) {
	if s.with, err = s.expandWith(inputOf(s.env, s.cur.st)); err != nil {
		return true, s.deadLetter(ctx, s.next(), attemptsOf(s.cur.st), "permanent error", err.Error())
	}
	bs, guarded := s.breakerSettings(s.with)
	s.bs = bs
	if guarded && s.w.breakers != nil {
		ticket, wait, err := s.w.breakers.Allow(ctx, bs)
		if err != nil {
			return true, err
		}
		if ticket == nil && wait > 0 {
			if len(s.node.Fallback) > 0 {
				done, err := s.fallback(ctx, attemptsOf(s.cur.st)+1, "breaker "+bs.Key+" is open")
				if done || err != nil {
					return true, err
				}
			}
			s.logger().Debug("breaker open: step deferred without spending an attempt", "key", bs.Key, "wait", wait)
			s.w.cfg.Observer.StepFinished(s.env.Workflow, s.env.Node, s.node.Type, OutcomeDeferredBreaker, 0)
			return true, s.deferFree(ctx, wait)
		}
		s.ticket = ticket
	}
	if r := s.node.Rate; r != nil && s.w.limits != nil {
		key := r.Key
		if key == "" {
			key = s.defaultKey()
		}
		if delay, giveBack := s.w.limits.Reserve(key, s.node.Type, r.PerSecond, r.Burst); delay > 0 {
			if delay > s.ts.ackWait/3 {
				giveBack()
				s.closeTicket(ctx) // a probe's slot goes back at once
				return true, s.deferFree(ctx, delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				s.closeTicket(ctx)
				return true, s.handBack(context.WithoutCancel(ctx), 0)
			case <-t.C:
			}
		}
	}
	return false, nil
}

// closeTicket gives back a breaker admission whose handler never reported (it did not run).
func (s *stepRun) closeTicket(ctx context.Context) {
	if s.ticket != nil {
		s.ticket.Done(ctx, breaker.ErrExcluded)
		s.ticket = nil
	}
}

// deferFree makes the step wait without spending an attempt (breaker open, rate limit). A
// short wait writes only the hand-back mark; a long one takes the schedule path.
func (s *stepRun) deferFree(ctx context.Context, wait time.Duration) error {
	wait = max(wait, 10*time.Millisecond)
	if s.shortWait(wait) {
		return s.handBack(ctx, wait)
	}
	return s.deferStep(ctx, s.next(), time.Now().Add(wait))
}

// reportBreaker tells the breaker how the call went: only retryable failures count against
// it. A retryable failure that finds the key open afterwards (it tripped the key, or another
// worker did while it ran) is marked in s.outage: the dependency is out, and the attempt is
// not spent (see failed). A half-open probe's failure is spent: that bounds how long a step
// waits out a dependency that never comes back. A Retry-After sets the key's cool-down,
// for a node with no breaker too (its key is then <workflow>.<node>).
func (s *stepRun) reportBreaker(ctx context.Context, ticket *breaker.Ticket, bs breaker.Settings, herr error) {
	if herr == nil {
		if ticket != nil {
			ticket.Done(ctx, nil)
			s.w.cfg.Observer.BreakerCall(bs.Key, false, s.took)
		}
		return
	}
	kind, after, _ := classify(herr)
	switch {
	case ctx.Err() != nil, errors.Is(herr, ErrRunCancelled), kind == outcomePermanent, kind == outcomePark:
		ticket.Done(ctx, breaker.ErrExcluded)
	case kind == outcomeRetryAfter:
		ticket.Done(ctx, breaker.ErrExcluded)
		if bs.Key == "" {
			bs = breaker.Settings{Key: s.defaultKey(), CoolDownOnly: true}
		}
		if ticket != nil {
			s.w.cfg.Observer.BreakerCall(bs.Key, true, s.took)
		}
		if after > 0 && s.w.breakers != nil {
			s.w.breakers.CoolDown(ctx, bs, after)
		}
	case ticket == nil:
	default:
		ticket.Done(ctx, herr)
		s.w.cfg.Observer.BreakerCall(bs.Key, true, s.took)
		if !ticket.Probe() && !bs.CoolDownOnly {
			if until, open := s.w.breakers.OpenUntil(bs); open {
				s.outage = until
			}
		}
	}
}

// fallback runs the node's fallback types in order, in this worker, and records the first
// success as the node's result of attempt attempt (marked as a fallback). It reports
// whether one succeeded.
func (s *stepRun) fallback(ctx context.Context, attempt int, why string) (bool, error) {
	input := inputOf(s.env, s.cur.st)
	var errs []string
	for _, typ := range s.node.Fallback {
		h := s.w.handler(typ)
		if h == nil {
			errs = append(errs, typ+": no handler on this worker")
			continue
		}
		step := &Step{RunID: s.env.RunID, Workflow: s.env.Workflow, Node: s.env.Node, Type: typ, Attempt: attempt,
			IdempotencyKey: s.idempotencyKey(), Input: input, With: s.with, Fallback: why, run: s, Index: s.env.Index(), Budget: s.def.BudgetUSD()}
		if s.env.IsItem() {
			step.Item = s.itemValue()
			step.Input = withItem(input, step.Item, step.Index)
		}
		started := time.Now().UTC()
		out, err, abandoned := s.invoke(ctx, h, step)
		if abandoned {
			return true, errDead
		}
		if err == nil {
			s.logger().Info("fallback used", "fallback", typ, "why", why)
			return true, s.record(ctx, checkpoint.Attempt{Number: attempt, Worker: s.w.cfg.ID, StartedAt: started}, out, nil, true)
		}
		if ctx.Err() != nil {
			return true, s.handBack(context.WithoutCancel(ctx), 0)
		}
		errs = append(errs, typ+": "+workflow.OneLine(err.Error(), 300))
	}
	s.logger().Warn("every fallback failed", "why", why, "errors", strings.Join(errs, "; "))
	return false, nil
}

// allowedEnv reads the environment variables named in names, for ${{ env.X }}.
func allowedEnv(names []string) map[string]string {
	env := map[string]string{}
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			env[n] = v
		}
	}
	return env
}
