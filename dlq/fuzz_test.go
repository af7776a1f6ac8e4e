package dlq_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/workflow"
)

// FuzzFromMsg feeds DLQ headers and bodies as anyone with publish rights could write them:
// reading an entry never panics, and what it reads stays on one line where it must.
func FuzzFromMsg(f *testing.F) {
	good := `{"v":1,"run_id":"r1","workflow":"w","def":"` + strings.Repeat("ab", 32) + `","node":"n","input":null,"dispatch":"d"}`
	f.Add("permanent error", "401 unauthorized", "1", "2026-11-28T08:00:00Z", "r1", "n", good)
	f.Add("", "", "", "", "", "", "")
	f.Add("malformed: x", "boom\nline two", "-3", "yesterday", "a.b", "*", "\x00\xff")
	f.Add("r", "e", "99999999999999999999", "2026-13-45T99:99:99Z", strings.Repeat("r", 100), ">", `{"v":1}`)
	f.Fuzz(func(t *testing.T, reason, errText, attempts, failedAt, run, node, body string) {
		h := nats.Header{}
		h.Set(workflow.HeaderReason, reason)
		h.Set(workflow.HeaderError, errText)
		h.Set(workflow.HeaderAttempts, attempts)
		h.Set(workflow.HeaderFailedAt, failedAt)
		h.Set(workflow.HeaderRun, run)
		h.Set(workflow.HeaderNode, node)
		e := dlq.FromMsg(7, h, []byte(body))
		if e == nil || e.ID != 7 {
			t.Fatalf("entry %+v", e)
		}
		if e.Workflow != "" && !workflow.ValidName(e.Workflow) {
			t.Fatalf("workflow %q read from a bad envelope", e.Workflow)
		}
	})
}
