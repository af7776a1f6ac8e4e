package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// DefaultPrefix is the prefix every name on the broker starts with unless configured.
const DefaultPrefix = "jetflow"

var (
	prefixRe = regexp.MustCompile(`^[a-z0-9_-]+$`)
)

// ValidName reports whether s may be a workflow, node or node-type name: one subject token of
// 1 to 128 letters, digits, '_' and '-'.
func ValidName(s string) bool { return len(s) <= 128 && validToken(s) }

// ValidRunID reports whether s may be a run ID: 1 to 64 letters, digits, '_' or '-'.
func ValidRunID(s string) bool { return len(s) <= 64 && validToken(s) }

// validToken reports whether s is non-empty and only [A-Za-z0-9_-] (the hot path of every
// step decode, so no regexp).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Names spells every stream, subject, consumer and bucket name of one installation. The zero
// value is not usable; build one with NewNames.
type Names struct {
	prefix string
	upper  string
}

// NewNames returns the names for prefix (empty means DefaultPrefix). A prefix is one token of
// lower-case letters, digits, '_' and '-'.
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRe.MatchString(prefix) {
		return Names{}, fmt.Errorf("prefix %q: use lower-case letters, digits, '_' and '-' only", prefix)
	}
	return Names{prefix: prefix, upper: strings.ToUpper(prefix)}, nil
}

// MustNames is NewNames for prefixes known to be valid; it panics on a bad one.
func MustNames(prefix string) Names {
	n, err := NewNames(prefix)
	if err != nil {
		panic(err)
	}
	return n
}

// Prefix returns the prefix the names are built from.
func (n Names) Prefix() string { return n.prefix }

// StepsStream is the work-queue stream that holds step messages and pending schedules.
func (n Names) StepsStream() string { return n.upper + "_STEPS" }

// StepSubjects are the subjects of the steps stream.
func (n Names) StepSubjects() []string {
	return []string{n.prefix + ".step.>", n.prefix + ".sched.>", n.prefix + ".start.>"}
}

// StartSubject is the subject a start request of workflow wf travels on.
func (n Names) StartSubject(wf string) string { return n.prefix + ".start." + wf }

// StartFilter is the filter of the start requests' consumer.
func (n Names) StartFilter() string { return n.prefix + ".start.>" }

// StartConsumer is the durable consumer workers take start requests from (jetflow-start).
func (n Names) StartConsumer() string { return n.Consumer(StartConsumerType) }

// StepSubject is the subject a step of node of workflow wf, of type nodeType, travels on.
func (n Names) StepSubject(nodeType, wf, node string) string {
	return n.prefix + ".step." + nodeType + "." + wf + "." + node
}

// StepFilter is the filter subject of the consumer of nodeType.
func (n Names) StepFilter(nodeType string) string { return n.prefix + ".step." + nodeType + ".>" }

// ScheduleSubject holds the message schedule of schedule name (`jetflow schedules add`): the
// server fires it onto the start subject of its workflow. Four tokens after the prefix, where
// a parked step's has five, so the two never meet.
func (n Names) ScheduleSubject(name string) string { return n.prefix + ".sched.schedule." + name }

// SchedSubject is the subject of the schedule that wakes node of run for attempt.
func (n Names) SchedSubject(runID, node string, attempt int) string {
	return fmt.Sprintf("%s.sched.%s.%s.%d", n.prefix, runID, node, attempt)
}

// ItemSchedSubject is the subject of the schedule that wakes item index of a for_each node.
func (n Names) ItemSchedSubject(runID, node string, index, attempt int) string {
	return fmt.Sprintf("%s.sched.%s.%s.i%d.%d", n.prefix, runID, node, index, attempt)
}

// Consumer is the durable consumer name of nodeType.
func (n Names) Consumer(nodeType string) string { return n.prefix + "-" + nodeType }

// DLQStream is the dead-letter stream.
func (n Names) DLQStream() string { return n.upper + "_DLQ" }

// DLQSubjects are the subjects of the DLQ stream.
func (n Names) DLQSubjects() []string { return []string{n.prefix + ".dlq.>"} }

// DLQSubject is the subject a dead step of node of workflow wf is kept under.
func (n Names) DLQSubject(wf, node string) string { return n.prefix + ".dlq." + wf + "." + node }

// DLQMalformedSubject is where messages that could not be decoded are kept.
func (n Names) DLQMalformedSubject() string { return n.prefix + ".dlq._malformed._" }

// AdvisoryStream captures MAX_DELIVERIES advisories of the steps stream for the sweeper.
func (n Names) AdvisoryStream() string { return n.upper + "_ADVISORIES" }

// AdvisorySubject is the advisory subject captured by AdvisoryStream.
func (n Names) AdvisorySubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + n.StepsStream() + ".>"
}

// SweeperConsumer is the durable consumer of AdvisoryStream.
func (n Names) SweeperConsumer() string { return n.prefix + "-sweeper" }

// TriggerConsumer is the durable consumer, on the trigger's own stream, that starts the
// runs of workflow wf.
func (n Names) TriggerConsumer(wf string) string { return n.prefix + "-trigger-" + wf }

// RunsBucket is the KV bucket of run records, node states, joins and ends.
func (n Names) RunsBucket() string { return n.prefix + "_runs" }

// WorkflowsBucket is the KV bucket of the definition registry.
func (n Names) WorkflowsBucket() string { return n.prefix + "_workflows" }

// BreakersBucket is the KV bucket of shared breaker trips.
func (n Names) BreakersBucket() string { return n.prefix + "_breakers" }

// WorkersBucket is the KV bucket of worker presence.
func (n Names) WorkersBucket() string { return n.prefix + "_workers" }

// CacheBucket is the KV bucket of cached llm results, by request hash.
func (n Names) CacheBucket() string { return n.prefix + "_cache" }

// BlobsBucket is the object store for large payloads.
func (n Names) BlobsBucket() string { return n.prefix + "_blobs" }

// Keys in the runs bucket.

// RunKey is the key of a run's record.
func RunKey(runID string) string { return "run." + runID }

// NodeKey is the key of a node's state.
func NodeKey(runID, node string) string { return "node." + runID + "." + node }

// JoinKey is the key of the set of finished parents of a node with several parents.
func JoinKey(runID, node string) string { return "join." + runID + "." + node }

// SinksKey is the key of the set of finished sink nodes of a run.
func SinksKey(runID string) string { return "sinks." + runID }

// ProgressKey is the key of the in-step progress a handler saved.
func ProgressKey(runID, node string) string { return "progress." + runID + "." + node }

// SignalKey is the key of the signal name sent to a run: its data, or the mark of a wait
// that timed out first.
func SignalKey(runID, name string) string { return "signal." + runID + "." + name }

// ParseSignalKey splits a SignalKey into its run and signal name.
func ParseSignalKey(key string) (runID, name string, ok bool) {
	rest, found := strings.CutPrefix(key, "signal.")
	if !found {
		return "", "", false
	}
	return strings.Cut(rest, ".")
}

// SpendKey is the key of a run's model spend: what its llm calls cost, by node and provider,
// and what calls are in flight against its budget.
func SpendKey(runID string) string { return "spend." + runID }

// CancelKey is present when an operator cancelled the run.
func CancelKey(runID string) string { return "cancel." + runID }

// EndKey is the key of a run's end.
func EndKey(runID string) string { return "end." + runID }

// Keys in the workflows bucket.

// WorkflowKey maps a workflow name to its current definition hash.
func WorkflowKey(name string) string { return "wf." + name } //nolint:revive // one of RunKey, EndKey, DefinitionKey: Key alone would not say which

// DefinitionKey holds the immutable definition with the given hash.
func DefinitionKey(hash string) string { return "def." + hash }

// IdempotencyKey is the stable key handlers should use for side effects of node in run.
func IdempotencyKey(runID, node string) string { return runID + "." + node }

// ItemKey is the KV key of the state of item index of for_each node of a run.
func ItemKey(runID, node string, index int) string {
	return "item." + runID + "." + node + "." + strconv.Itoa(index)
}

// ItemsFilter is the KV key filter of every item state of a for_each node of a run.
func ItemsFilter(runID, node string) string { return "item." + runID + "." + node + ".*" }

// ItemIdempotencyKey is the idempotency key of item index of a for_each node:
// "<runID>.<node>.<index>".
func ItemIdempotencyKey(runID, node string, index int) string {
	return runID + "." + node + "." + strconv.Itoa(index)
}

// ChildRunID is the run ID of the subflow a node of a run starts, for the node's dispatch: a
// UUIDv5 of those names, so a retry or a redelivery names the same child, and a DLQ replay of
// the node (a new dispatch) a new one.
func ChildRunID(runID, node, dispatch string) string {
	name := runID + "." + node
	if dispatch != "" && dispatch != DispatchFirst && dispatch[0] == dispatchReplayPrefix {
		name += "." + dispatch
	}
	return uuid.NewSHA1(childNamespace, []byte(name)).String()
}

// childNamespace is the UUID namespace of subflow run IDs.
var childNamespace = uuid.MustParse("6f1c2a52-4b6e-5d59-9a0e-6a65746c6f77")
