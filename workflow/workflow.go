package workflow

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Defaults of node settings, applied where a definition leaves them out.
const (
	DefaultMaxAttempts = 5
	DefaultInitial     = time.Second
	DefaultMaxBackoff  = 5 * time.Minute
	DefaultMultiplier  = 2.0
	DefaultJitter      = 1.0
	DefaultTimeout     = 10 * time.Minute
	DefaultMaxCrashes  = 3
	// MaxAttemptsLimit is the largest retry.max_attempts validation accepts.
	MaxAttemptsLimit = 100
	// MaxNodes is the largest number of nodes in one workflow.
	MaxNodes = 10000
	// MaxConcurrency is the largest node concurrency cap validation accepts.
	MaxConcurrency = 100000
)

// Workflow is a DAG of nodes. Build one with New and Node, or parse one with Parse.
type Workflow struct {
	// Name names the workflow in the registry and on step subjects.
	Name string `json:"name"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Nodes are the steps, in the order they were declared.
	Nodes []*Node `json:"nodes"`
	// Budget caps what one run's model calls (llm nodes) may cost, cluster-wide.
	Budget *Budget `json:"budget,omitempty"`
	// On starts a run for each message of a stream (DESIGN.md "Triggers").
	On *Trigger `json:"on,omitempty"`

	index    map[string]int
	children map[string][]string
	sinks    []string
}

// Node is one step of a workflow.
type Node struct {
	// Name is unique within the workflow.
	Name string `json:"name"`
	// Type selects the handler that runs the node.
	Type string `json:"type"`
	// Needs lists the parents that must be done before this node runs.
	Needs []string `json:"needs,omitempty"`
	// With configures the handler; string values may hold ${{ expr }} expressions.
	With map[string]any `json:"with,omitempty"`
	// Retry is the retry policy; nil means the defaults.
	Retry *Retry `json:"retry,omitempty"`
	// Timeout bounds one handler run; zero means DefaultTimeout.
	Timeout Duration `json:"timeout,omitempty"`
	// MaxCrashes is how many crashed or timed-out deliveries send the step to the DLQ; zero
	// means DefaultMaxCrashes.
	MaxCrashes int `json:"max_crashes,omitempty"`
	// Breaker guards the node's dependency with a circuit breaker shared by every worker;
	// nil means none, except for http nodes, which get one keyed by the URL's host.
	Breaker *Breaker `json:"breaker,omitempty"`
	// Fallback lists node types tried in order, in the same worker, when the breaker is open
	// or the attempts are used up.
	Fallback Fallback `json:"fallback,omitempty"`
	// Rate limits calls cluster-wide.
	Rate *Rate `json:"rate,omitempty"`
	// Concurrency caps the steps of the node's type in flight across the cluster: applying
	// the workflow sets it as the type's consumer MaxAckPending (the type is shared, so the
	// last workflow applied with a cap sets it). Zero leaves the consumer as it is.
	Concurrency int `json:"concurrency,omitempty"`
	// If, "${{ expr }}", is evaluated when the node would run: false skips the node (see
	// DESIGN.md "Control flow").
	If string `json:"if,omitempty"`
	// ForEach, "${{ expr }}", gives a JSON array: the node runs once per item, each item its
	// own step, and its output is the list of the items' outputs in order.
	ForEach string `json:"for_each,omitempty"`
	// MaxParallel bounds the items of one for_each node of one run in flight cluster-wide
	// (default DefaultMaxParallel).
	MaxParallel int `json:"max_parallel,omitempty"`
}

// Control-flow limits (DESIGN.md "Control flow: conditions, maps, subflows").
const (
	// DefaultMaxParallel is a for_each node's max_parallel when it sets none.
	DefaultMaxParallel = 16
	// MaxParallelLimit is the largest max_parallel validation accepts.
	MaxParallelLimit = 1000
	// MaxItems is the most items a for_each expression may give at run time.
	MaxItems = 10000
	// MaxSubflowDepth is how deep subflows may nest: a top-level run is depth 0.
	MaxSubflowDepth = 10
	// SubflowType is the node type of a subflow: it starts a run of another workflow.
	SubflowType = "workflow"
	// WaitType is the node type that waits for a signal (DESIGN.md "Waiting").
	WaitType = "wait"
	// ServiceType is the node type that calls a NATS service (DESIGN.md "Services").
	ServiceType = "service"
	// DefaultWaitTimeout is a wait node's timeout when it sets none.
	DefaultWaitTimeout = 24 * time.Hour
	// MaxWaitTimeout is the longest timeout a wait node may set.
	MaxWaitTimeout = 365 * 24 * time.Hour
)

// MaxParallelOrDefault returns the node's max_parallel with the default applied.
func (n *Node) MaxParallelOrDefault() int { return cmp.Or(n.MaxParallel, DefaultMaxParallel) }

// Breaker configures a node's circuit breaker. Zero fields take the defaults.
type Breaker struct {
	// Key names the dependency; nodes with the same key share one breaker (default
	// "<workflow>.<node>", or the URL's host for http nodes).
	Key string `json:"key,omitempty"`
	// Scope "type" makes the key cover the node's whole type: a trip then also pauses that
	// type's consumer, so no worker fetches what it cannot run. Default "node".
	Scope string `json:"scope,omitempty"`
	// ConsecutiveFailures trips the breaker (default 5).
	ConsecutiveFailures int `json:"consecutive_failures,omitempty"`
	// FailureRatio, with MinRequests, trips the breaker when that share of at least
	// MinRequests calls failed (optional).
	FailureRatio float64 `json:"failure_ratio,omitempty"`
	// MinRequests goes with FailureRatio.
	MinRequests int `json:"min_requests,omitempty"`
	// OpenFor is how long the breaker stays open before it lets probes through (default 30s).
	OpenFor Duration `json:"open_for,omitempty"`
	// HalfOpenRequests is how many probe calls are let through cluster-wide (default 1).
	HalfOpenRequests int `json:"half_open_requests,omitempty"`
}

// Trigger names the stream whose messages start runs of a workflow: one run per message,
// the body its input, run ID <workflow>-<stream seq>.
type Trigger struct {
	// Stream is an existing JetStream stream.
	Stream string `json:"stream"`
	// Subject, when set, filters the stream's subjects.
	Subject string `json:"subject,omitempty"`
}

// MaxTriggeredName is the longest name of a workflow with a trigger: its run IDs append
// "-<stream seq>" (up to 20 digits) within the 64 characters a run ID may have.
const MaxTriggeredName = 43

// TriggerRunID is the run a trigger starts for the message at seq of its stream.
func TriggerRunID(wf string, seq uint64) string { return wf + "-" + strconv.FormatUint(seq, 10) }

// TriggerNode is the node name of a trigger's DLQ entries (subject <prefix>.dlq.<workflow>._trigger).
const TriggerNode = "_trigger"

// Budget caps a run's model spend.
type Budget struct {
	// USD is the cap: a call that would start with the run's spend (calls in flight
	// included) at or over it fails with reason "budget exceeded".
	USD float64 `json:"usd"`
}

// BudgetUSD returns the workflow's budget in USD, 0 when it has none.
func (w *Workflow) BudgetUSD() float64 {
	if w == nil || w.Budget == nil {
		return 0
	}
	return w.Budget.USD
}

// Rate is a cluster-wide rate limit.
type Rate struct {
	// Key names the limit; nodes with the same key share it (default "<workflow>.<node>").
	Key string `json:"key,omitempty"`
	// PerSecond is the sustained rate across every worker.
	PerSecond float64 `json:"per_second"`
	// Burst is how many calls may go at once (default 1).
	Burst int `json:"burst,omitempty"`
}

// Fallback is a list of node types; a definition may write one type as a plain string.
type Fallback []string

// UnmarshalJSON reads a string or a list of strings.
func (f *Fallback) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*f = Fallback{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("fallback must be a node type or a list of node types")
	}
	*f = list
	return nil
}

// Retry is a node's retry policy. Zero fields take the defaults.
type Retry struct {
	// MaxAttempts counts handler runs, the first included (default 5).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Initial is the first backoff (default 1s).
	Initial Duration `json:"initial,omitempty"`
	// Max caps the backoff (default 5m).
	Max Duration `json:"max,omitempty"`
	// Multiplier grows the backoff each attempt (default 2).
	Multiplier float64 `json:"multiplier,omitempty"`
	// Jitter is the share of the backoff drawn at random, 0 to 1 (default 1: full jitter).
	Jitter *float64 `json:"jitter,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err2 := json.Unmarshal(b, &f); err2 != nil {
			return fmt.Errorf("duration must be a string such as \"30s\"")
		}
		if f > math.MaxInt64/float64(time.Second) || f < -math.MaxInt64/float64(time.Second) {
			return fmt.Errorf("duration %v seconds is out of range", f)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: use a number and a unit such as \"30s\" or \"5m\"", s)
	}
	*d = Duration(v)
	return nil
}

// New starts a workflow definition in Go.
func New(name string) *Workflow { return &Workflow{Name: name} }

// Node adds a node of type typ that needs the given parents and returns the node, so its
// other settings can be chained (WithArgs, WithRetry, WithTimeout).
func (w *Workflow) Node(name, typ string, needs ...string) *Node {
	n := &Node{Name: name, Type: typ, Needs: needs}
	w.Nodes = append(w.Nodes, n)
	w.index = nil
	return n
}

// WithArgs sets the node's With settings and returns the node.
func (n *Node) WithArgs(with map[string]any) *Node { n.With = with; return n }

// WithRetry sets the node's retry policy and returns the node.
func (n *Node) WithRetry(r Retry) *Node { n.Retry = &r; return n }

// WithTimeout sets the node's timeout and returns the node.
func (n *Node) WithTimeout(d time.Duration) *Node { n.Timeout = Duration(d); return n }

// Lookup returns the node called name, or nil.
func (w *Workflow) Lookup(name string) *Node {
	w.build()
	i, ok := w.index[name]
	if !ok {
		return nil
	}
	return w.Nodes[i]
}

// Children returns the names of the nodes that need node.
func (w *Workflow) Children(node string) []string {
	w.build()
	return w.children[node]
}

// Roots returns the nodes that need nothing, in declaration order.
func (w *Workflow) Roots() []*Node {
	var roots []*Node
	for _, n := range w.Nodes {
		if len(n.Needs) == 0 {
			roots = append(roots, n)
		}
	}
	return roots
}

// FirstRoot returns the name of the first node, in declaration order, that needs nothing:
// the node whose first step marks a run's start.
func (w *Workflow) FirstRoot() string {
	for _, n := range w.Nodes {
		if len(n.Needs) == 0 {
			return n.Name
		}
	}
	return ""
}

// Sinks returns the names of nodes nothing needs, in declaration order.
func (w *Workflow) Sinks() []string {
	w.build()
	return w.sinks
}

func (w *Workflow) build() {
	if w.index != nil {
		return
	}
	w.index = make(map[string]int, len(w.Nodes))
	w.children = make(map[string][]string)
	for i, n := range w.Nodes {
		if _, dup := w.index[n.Name]; !dup {
			w.index[n.Name] = i
		}
		for _, p := range n.Needs {
			if !slices.Contains(w.children[p], n.Name) {
				w.children[p] = append(w.children[p], n.Name)
			}
		}
	}
	w.sinks = nil
	for _, n := range w.Nodes {
		if len(w.children[n.Name]) == 0 {
			w.sinks = append(w.sinks, n.Name)
		}
	}
}

// Canonical returns the definition's canonical JSON: the bytes its hash is taken over and the
// form stored in the registry.
func (w *Workflow) Canonical() ([]byte, error) { return json.Marshal(w) }

// Hash returns the hex SHA-256 of the canonical JSON.
func (w *Workflow) Hash() (string, error) {
	b, err := w.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// validHash reports whether s is 64 lower-case hex digits.
func validHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Policy is a node's retry policy with every default filled in.
type Policy struct {
	MaxAttempts int
	Initial     time.Duration
	Max         time.Duration
	Multiplier  float64
	Jitter      float64
}

// RetryPolicy returns the node's retry policy with defaults applied.
func (n *Node) RetryPolicy() Policy {
	p := Policy{DefaultMaxAttempts, DefaultInitial, DefaultMaxBackoff, DefaultMultiplier, DefaultJitter}
	if r := n.Retry; r != nil {
		p.MaxAttempts = cmp.Or(r.MaxAttempts, p.MaxAttempts)
		p.Initial = cmp.Or(r.Initial.D(), p.Initial)
		p.Max = cmp.Or(r.Max.D(), p.Max)
		p.Multiplier = cmp.Or(r.Multiplier, p.Multiplier)
		if r.Jitter != nil {
			p.Jitter = *r.Jitter
		}
	}
	return p
}

// Backoff returns the wait before the retry that follows failed attempt number attempt
// (1-based): min(max, initial × multiplier^(attempt-1)), of which the Jitter share is drawn
// uniformly at random ("full jitter" at 1).
func (p Policy) Backoff(attempt int) time.Duration {
	return p.backoff(attempt, rand.Float64())
}

func (p Policy) backoff(attempt int, r float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(p.Initial) * math.Pow(p.Multiplier, float64(attempt-1))
	if d > float64(p.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(p.Max)
	}
	fixed := d * (1 - p.Jitter)
	return time.Duration(fixed + r*(d-fixed))
}

// TimeoutOrDefault returns the node's timeout with the default applied.
func (n *Node) TimeoutOrDefault() time.Duration { return cmp.Or(n.Timeout.D(), DefaultTimeout) }

// MaxCrashesOrDefault returns the node's max_crashes with the default applied.
func (n *Node) MaxCrashesOrDefault() int { return cmp.Or(n.MaxCrashes, DefaultMaxCrashes) }
