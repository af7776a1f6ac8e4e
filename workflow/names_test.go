package workflow

import (
	"strings"
	"testing"
)

func TestNewNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix, want string // want is the prefix in use, or "" for an error
	}{
		{"", "jetflow"},
		{"jetflow", "jetflow"},
		{"my-app", "my-app"},
		{"a_b", "a_b"},
		{"x1", "x1"},
		{"-", "-"},
		{"MyApp", ""},
		{"my.app", ""},
		{"my app", ""},
		{"*", ""},
		{">", ""},
		{"app>", ""},
		{"äpp", ""},
		{"a/b", ""},
		{"a\nb", ""},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			t.Parallel()
			n, err := NewNames(tt.prefix)
			if tt.want == "" {
				requireOneLine(t, err)
				if !strings.Contains(err.Error(), "use lower-case letters, digits, '_' and '-' only") {
					t.Fatalf("error %q does not say what is allowed", err)
				}
				defer func() {
					if recover() == nil {
						t.Errorf("MustNames(%q) did not panic", tt.prefix)
					}
				}()
				MustNames(tt.prefix)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Prefix() != tt.want {
				t.Fatalf("Prefix() = %q, want %q", n.Prefix(), tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix string
		want   map[string]string
	}{
		{"jetflow", map[string]string{
			"StepsStream":         "JETFLOW_STEPS",
			"StepSubjects":        "jetflow.step.> jetflow.sched.> jetflow.start.>",
			"StepSubject":         "jetflow.step.http.orders.charge",
			"StepFilter":          "jetflow.step.http.>",
			"SchedSubject":        "jetflow.sched.run-1.charge.3",
			"Consumer":            "jetflow-http",
			"DLQStream":           "JETFLOW_DLQ",
			"DLQSubjects":         "jetflow.dlq.>",
			"DLQSubject":          "jetflow.dlq.orders.charge",
			"DLQMalformedSubject": "jetflow.dlq._malformed._",
			"AdvisoryStream":      "JETFLOW_ADVISORIES",
			"AdvisorySubject":     "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JETFLOW_STEPS.>",
			"SweeperConsumer":     "jetflow-sweeper",
			"RunsBucket":          "jetflow_runs",
			"WorkflowsBucket":     "jetflow_workflows",
			"BreakersBucket":      "jetflow_breakers",
			"WorkersBucket":       "jetflow_workers",
			"BlobsBucket":         "jetflow_blobs",
		}},
		{"my-app", map[string]string{
			"StepsStream":         "MY-APP_STEPS",
			"StepSubjects":        "my-app.step.> my-app.sched.> my-app.start.>",
			"StepSubject":         "my-app.step.http.orders.charge",
			"StepFilter":          "my-app.step.http.>",
			"SchedSubject":        "my-app.sched.run-1.charge.3",
			"Consumer":            "my-app-http",
			"DLQStream":           "MY-APP_DLQ",
			"DLQSubjects":         "my-app.dlq.>",
			"DLQSubject":          "my-app.dlq.orders.charge",
			"DLQMalformedSubject": "my-app.dlq._malformed._",
			"AdvisoryStream":      "MY-APP_ADVISORIES",
			"AdvisorySubject":     "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MY-APP_STEPS.>",
			"SweeperConsumer":     "my-app-sweeper",
			"RunsBucket":          "my-app_runs",
			"WorkflowsBucket":     "my-app_workflows",
			"BreakersBucket":      "my-app_breakers",
			"WorkersBucket":       "my-app_workers",
			"BlobsBucket":         "my-app_blobs",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			t.Parallel()
			n := MustNames(tt.prefix)
			got := map[string]string{
				"StepsStream":         n.StepsStream(),
				"StepSubjects":        strings.Join(n.StepSubjects(), " "),
				"StepSubject":         n.StepSubject("http", "orders", "charge"),
				"StepFilter":          n.StepFilter("http"),
				"SchedSubject":        n.SchedSubject("run-1", "charge", 3),
				"Consumer":            n.Consumer("http"),
				"DLQStream":           n.DLQStream(),
				"DLQSubjects":         strings.Join(n.DLQSubjects(), " "),
				"DLQSubject":          n.DLQSubject("orders", "charge"),
				"DLQMalformedSubject": n.DLQMalformedSubject(),
				"AdvisoryStream":      n.AdvisoryStream(),
				"AdvisorySubject":     n.AdvisorySubject(),
				"SweeperConsumer":     n.SweeperConsumer(),
				"RunsBucket":          n.RunsBucket(),
				"WorkflowsBucket":     n.WorkflowsBucket(),
				"BreakersBucket":      n.BreakersBucket(),
				"WorkersBucket":       n.WorkersBucket(),
				"BlobsBucket":         n.BlobsBucket(),
			}
			if len(got) != len(tt.want) {
				t.Fatalf("the test checks %d names, the table has %d", len(got), len(tt.want))
			}
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
		})
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	got := []string{
		RunKey("r1"), NodeKey("r1", "a"), JoinKey("r1", "a"), SinksKey("r1"), ProgressKey("r1", "a"),
		CancelKey("r1"), EndKey("r1"), WorkflowKey("orders"), DefinitionKey(testDef), IdempotencyKey("r1", "a"),
	}
	want := []string{
		"run.r1", "node.r1.a", "join.r1.a", "sinks.r1", "progress.r1.a",
		"cancel.r1", "end.r1", "wf.orders", "def." + testDef, "r1.a",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("keys:\n got %v\nwant %v", got, want)
	}
}

func TestValidNameAndRunID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s           string
		name, runID bool
	}{
		{"a", true, true},
		{"Order_2-b", true, true},
		{strings.Repeat("x", 64), true, true},
		{strings.Repeat("x", 65), true, false},
		{strings.Repeat("x", 128), true, false},
		{strings.Repeat("x", 129), false, false},
		{"", false, false},
		{"a.b", false, false},
		{"*", false, false},
		{">", false, false},
		{"a b", false, false},
		{"a\tb", false, false},
		{"größe", false, false},
		{"a/b", false, false},
		{"a$b", false, false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.s); got != tt.name {
			t.Errorf("ValidName(%q) = %v, want %v", tt.s, got, tt.name)
		}
		if got := ValidRunID(tt.s); got != tt.runID {
			t.Errorf("ValidRunID(%q) = %v, want %v", tt.s, got, tt.runID)
		}
	}
}
