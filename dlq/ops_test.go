package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
)

func TestGroup(t *testing.T) {
	t.Parallel()
	e := func(wf, node, reason string) *dlq.Entry { return &dlq.Entry{Workflow: wf, Node: node, Reason: reason} }
	for _, c := range []struct {
		name    string
		entries []*dlq.Entry
		want    []dlq.GroupCount
	}{
		{"empty", nil, []dlq.GroupCount{}},
		{"most first", []*dlq.Entry{
			e("a", "x", "permanent error"), e("b", "y", "attempts exhausted (3 of 3)"),
			e("b", "y", "attempts exhausted (3 of 3)"), e("a", "x", "malformed"),
			e("b", "y", "attempts exhausted (3 of 3)"),
		}, []dlq.GroupCount{
			{Workflow: "b", Node: "y", Reason: "attempts exhausted (3 of 3)", Count: 3},
			{Workflow: "a", Node: "x", Reason: "malformed", Count: 1},
			{Workflow: "a", Node: "x", Reason: "permanent error", Count: 1},
		}},
		{"ties by name", []*dlq.Entry{e("b", "n", "r"), e("a", "n", "r"), e("a", "m", "r")}, []dlq.GroupCount{
			{Workflow: "a", Node: "m", Reason: "r", Count: 1},
			{Workflow: "a", Node: "n", Reason: "r", Count: 1},
			{Workflow: "b", Node: "n", Reason: "r", Count: 1},
		}},
	} {
		if got := dlq.Group(c.entries); !slices.Equal(got, c.want) {
			t.Errorf("%s: Group = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestEditInput(t *testing.T) {
	t.Parallel()
	orig := json.RawMessage(`{"input":{"a":1},"nodes":{"p":{"out":2}}}`)
	for _, c := range []struct {
		edit, want string
		bad        bool
	}{
		{edit: `{"input": {"a": 2}, "nodes": {}}`, want: `{"input":{"a":2},"nodes":{}}`},
		{edit: `{"input": {"a": 2}}`, want: `{"input":{"a":2},"nodes":{"p":{"out":2}}}`},
		{edit: `{"input": null, "nodes": {"p": 3}, "extra": true}`, want: `{"input":null,"nodes":{"p":3},"extra":true}`},
		{edit: `{"a": 2}`, bad: true},
		{edit: `{"input": 1`, bad: true},
		{edit: `[]`, bad: true},
		{edit: `null`, bad: true},
		{edit: ``, bad: true},
	} {
		got, err := dlq.EditInput(json.RawMessage(c.edit), orig, 0)
		switch {
		case c.bad && !errors.Is(err, producer.ErrBadInput):
			t.Errorf("EditInput(%s): want ErrBadInput, got %s, %v", c.edit, got, err)
		case !c.bad && (err != nil || string(got) != c.want):
			t.Errorf("EditInput(%s) = %s, %v; want %s", c.edit, got, err, c.want)
		}
	}
}

func TestDeleteAndPurge(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	var ids []uint64
	for i, wf := range []string{"a", "a", "b", "b", "b"} {
		id, err := dlq.Publish(ctx, f.js, f.names, []byte(`{}`), dlq.Failure{Workflow: wf, Node: "n", RunID: "r" + wf, Reason: "permanent error", StreamSeq: uint64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if n, err := dlq.Delete(ctx, f.js, f.names, ids[0], ids[0], 12345); err != nil || n != 1 {
		t.Errorf("Delete: %d, %v; want 1 (missing IDs are skipped)", n, err)
	}
	if n, err := dlq.Purge(ctx, f.js, f.names, dlq.Filter{Workflow: "b"}); err != nil || n != 3 {
		t.Errorf("Purge --workflow b: %d, %v; want 3", n, err)
	}
	left, err := dlq.List(ctx, f.js, f.names, dlq.Filter{})
	if err != nil || len(left) != 1 || left[0].ID != ids[1] {
		t.Errorf("left: %+v, %v; want entry %d", left, err, ids[1])
	}
	if _, err := dlq.Get(ctx, f.js, f.names, ids[0]); !errors.Is(err, dlq.ErrNoEntry) {
		t.Errorf("Get of a deleted entry: %v", err)
	}
}
