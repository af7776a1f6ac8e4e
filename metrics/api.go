package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/producer"
	"github.com/jetflow-dev/jetflow/workflow"
)

// Limits of the API.
const (
	// DefaultListLimit is how many runs or DLQ entries a list returns unless told.
	DefaultListLimit = 100
	// MaxListLimit is the most a list returns.
	MaxListLimit = 1000
	// ReplayRate is how many DLQ entries a replay request replays per second.
	ReplayRate = 50
	// hiddenErrorChars is how much of an error's first line is shown without ShowPayloads.
	hiddenErrorChars = 200
)

// apiTimeout bounds the broker reads of one API request.
const apiTimeout = 30 * time.Second

// RunDetail is /api/runs/{id}: the run as `jetflow runs get --json` shows it, with payloads
// hidden unless the server shows them.
type RunDetail struct {
	*checkpoint.RunView
	// PayloadsHidden says outputs and edited inputs are left out and errors cut to their first line.
	PayloadsHidden bool `json:"payloads_hidden,omitempty"`
}

// DLQList is /api/dlq: the entries, or with ?group=1 the groups.
type DLQList struct {
	// Entries are the entries, oldest first (without ?group=1).
	Entries []*dlq.Entry `json:"entries,omitempty"`
	// Groups count the entries by workflow, node and reason (with ?group=1).
	Groups []dlq.GroupCount `json:"groups,omitempty"`
	// Total is how many entries matched (before grouping).
	Total int `json:"total"`
	// PayloadsHidden says errors are cut to their first line, at most 200 characters.
	PayloadsHidden bool `json:"payloads_hidden,omitempty"`
}

// ReplayRequest is the body of POST /api/dlq/replay: IDs, or All (with the optional
// filters) for every matching entry.
type ReplayRequest struct {
	// IDs are the entries to replay.
	IDs []uint64 `json:"ids"`
	// All replays every entry matching Workflow, Node and Reason (empty: any).
	All bool `json:"all"`
	// Workflow and Node keep entries of them; Reason keeps entries whose reason contains it.
	Workflow string `json:"workflow,omitempty"`
	Node     string `json:"node,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// ReplayItem is what happened to one entry of a replay request.
type ReplayItem struct {
	// ID is the entry; RunID its run.
	ID    uint64 `json:"id"`
	RunID string `json:"run_id,omitempty"`
	// Status is dlq.StatusReplayed or dlq.StatusAlreadyReplayed when it worked.
	Status string `json:"status,omitempty"`
	// Error says why it did not.
	Error string `json:"error,omitempty"`
}

// ReplayResponse answers POST /api/dlq/replay.
type ReplayResponse struct {
	// Replayed and Failed count the entries that were replayed and those that were not.
	Replayed int `json:"replayed"`
	Failed   int `json:"failed"`
	// Results says what happened to each entry, in order.
	Results []ReplayItem `json:"results"`
}

// PurgeRequest is the body of POST /api/dlq/purge: IDs, or filters, or All for everything.
type PurgeRequest struct {
	// IDs are the entries to delete.
	IDs []uint64 `json:"ids"`
	// All deletes every entry (without filters).
	All bool `json:"all"`
	// Workflow, Node and RunID keep entries of them; Reason keeps entries whose reason
	// contains it.
	Workflow string `json:"workflow,omitempty"`
	Node     string `json:"node,omitempty"`
	RunID    string `json:"run_id,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// PurgeResponse answers POST /api/dlq/purge.
type PurgeResponse struct {
	// Purged is how many entries were deleted.
	Purged int `json:"purged"`
}

// CancelResponse answers POST /api/runs/{id}/cancel.
type CancelResponse struct {
	// ID is the run.
	ID string `json:"id"`
	// Cancelled is false when the run was cancelled already.
	Cancelled bool `json:"cancelled"`
	// Status is the run's status now: cancelled.
	Status string `json:"status"`
}

func apiCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), apiTimeout)
}

// hideError cuts an error to its first line, at most hiddenErrorChars characters.
func hideError(s string) string {
	line, _, cut := strings.Cut(s, "\n")
	line = strings.TrimSpace(line)
	if r := []rune(line); len(r) > hiddenErrorChars {
		line, cut = string(r[:hiddenErrorChars]), true
	}
	if cut {
		line += " …"
	}
	return line
}

// redactRun hides a run's payloads unless the server shows them.
func (s *Server) redactRun(v *checkpoint.RunView) *RunDetail {
	d := &RunDetail{RunView: v}
	if s.cfg.ShowPayloads || v == nil {
		return d
	}
	d.PayloadsHidden = true
	for _, n := range v.Nodes {
		// Input is an operator's edit of a replayed node's input (EditedFrom says which
		// replay): as much a payload as the output.
		n.Output, n.Input = nil, nil
		n.Error = hideError(n.Error)
	}
	return d
}

func (s *Server) redactEntry(e *dlq.Entry) {
	if !s.cfg.ShowPayloads {
		e.Error = hideError(e.Error)
	}
}

func (s *Server) apiOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := apiCtx(r)
	defer cancel()
	writeJSON(w, http.StatusOK, ReadOverview(ctx, s.js, s.cfg.Names, s.act))
}

// queryLimit reads the limit of a list from a query: def when absent, at most MaxListLimit.
func queryLimit(q url.Values, def int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return def, errors.New("limit: use a positive number")
	}
	return min(n, MaxListLimit), nil
}

// runFilter reads status, workflow and limit from a query.
func runFilter(r *http.Request) (checkpoint.RunFilter, error) {
	q := r.URL.Query()
	f := checkpoint.RunFilter{Status: q.Get("status"), Workflow: q.Get("workflow"), Limit: DefaultListLimit}
	if f.Status != "" && !slices.Contains(checkpoint.RunStatuses, f.Status) {
		return f, errors.New("status: use one of " + strings.Join(checkpoint.RunStatuses, ", "))
	}
	n, err := queryLimit(q, f.Limit)
	f.Limit = n
	return f, err
}

func (s *Server) apiRuns(w http.ResponseWriter, r *http.Request) {
	f, err := runFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	runs, err := s.store.ListRuns(ctx, f)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if runs == nil {
		runs = []*checkpoint.RunSummary{}
	}
	writeJSON(w, http.StatusOK, runs)
}

func (s *Server) apiRun(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := apiCtx(r)
	defer cancel()
	v, err := s.store.Describe(ctx, r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	consumer.MarkUnserved(ctx, s.js, s.cfg.Names, v)
	writeJSON(w, http.StatusOK, s.redactRun(v))
}

func (s *Server) apiCancel(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	id := r.PathValue("id")
	did, err := s.store.Cancel(ctx, id, workflow.OneLine(body.Reason, 500))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, CancelResponse{ID: id, Cancelled: did, Status: checkpoint.EndCancelled})
}

// SignalResponse answers POST /api/runs/{id}/signal/{name}.
type SignalResponse struct {
	ID     string `json:"id"`
	Signal string `json:"signal"`
	Sent   bool   `json:"sent"`
}

// apiSignal sends a signal; the body, when any, is its data (JSON). A refused signal (sent
// already, timed out, ended run, no node waits for it) is 409, an unknown run 404.
func (s *Server) apiSignal(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, checkpoint.DefaultMaxPayload+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var data json.RawMessage
	if len(bytes.TrimSpace(body)) > 0 {
		if data, err = producer.CheckInput(body, checkpoint.DefaultMaxPayload); err != nil {
			writeError(w, http.StatusBadRequest, "data: "+err.Error())
			return
		}
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	id, name := r.PathValue("id"), r.PathValue("name")
	err = consumer.SendSignal(ctx, s.js, s.store, s.cfg.Names, id, name, data)
	switch {
	case errors.Is(err, consumer.ErrAlreadySignalled), errors.Is(err, consumer.ErrSignalTimedOut),
		errors.Is(err, consumer.ErrRunEnded), errors.Is(err, consumer.ErrUnknownSignal):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, SignalResponse{ID: id, Signal: name, Sent: true})
}

// dlqFilter reads workflow, node, run, reason and limit from a query.
func dlqFilter(r *http.Request) (dlq.Filter, error) {
	q := r.URL.Query()
	f := dlq.Filter{Workflow: q.Get("workflow"), Node: q.Get("node"), RunID: q.Get("run"), Reason: q.Get("reason")}
	n, err := queryLimit(q, f.Limit)
	f.Limit = n
	return f, err
}

func (s *Server) apiDLQ(w http.ResponseWriter, r *http.Request) {
	f, err := dlqFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	group := r.URL.Query().Get("group")
	grouped := group == "1" || group == "true"
	if !grouped && f.Limit == 0 {
		f.Limit = DefaultListLimit
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	entries, err := dlq.List(ctx, s.js, s.cfg.Names, f)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	out := DLQList{Total: len(entries), PayloadsHidden: !s.cfg.ShowPayloads}
	if grouped {
		out.Groups = dlq.Group(entries)
	} else {
		for _, e := range entries {
			s.redactEntry(e)
		}
		out.Entries = entries
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiDLQEntry(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if p := r.PathValue("id"); p == "replay" || p == "purge" {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "DLQ entry IDs are numbers")
		return
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	d, err := dlq.Show(ctx, s.js, s.cfg.Names, id)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if !s.cfg.ShowPayloads {
		d.Error, d.Input, d.RawBody = hideError(d.Error), nil, ""
		delete(d.Headers, workflow.HeaderError)
		if d.NodeState != nil {
			st := *d.NodeState
			st.Output, st.Input, st.LastError = nil, nil, hideError(st.LastError)
			d.NodeState = &st
		}
		if d.Run != nil {
			d.Run = s.redactRun(d.Run).RunView
		}
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) apiReplay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.IDs) > 0 == req.All {
		writeError(w, http.StatusBadRequest, `give either "ids": [...] or "all": true`)
		return
	}
	// A replay keeps going if the client goes away: stopping half-way helps nobody.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	ids := req.IDs
	if req.All {
		entries, err := dlq.List(ctx, s.js, s.cfg.Names, dlq.Filter{Workflow: req.Workflow, Node: req.Node, Reason: req.Reason})
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		ids = dlq.IDs(entries)
	}
	resp := ReplayResponse{Results: []ReplayItem{}}
	_, err := dlq.ReplayBatch(ctx, s.js, s.store, s.cfg.Names, ids, dlq.BatchOptions{Rate: ReplayRate}, func(res *dlq.ReplayResult, err error) {
		item := ReplayItem{ID: res.ID, RunID: res.RunID, Status: res.Status}
		if err != nil {
			item.Error = workflow.OneLine(err.Error(), 500)
			resp.Failed++
		} else {
			resp.Replayed++
		}
		resp.Results = append(resp.Results, item)
	})
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	code := http.StatusOK
	if resp.Failed > 0 && resp.Replayed == 0 {
		code = http.StatusConflict
	}
	writeJSON(w, code, resp)
}

func (s *Server) apiPurge(w http.ResponseWriter, r *http.Request) {
	var req PurgeRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	filtered := req.Workflow != "" || req.Node != "" || req.RunID != "" || req.Reason != ""
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Minute)
	defer cancel()
	var n int
	var err error
	switch {
	case len(req.IDs) > 0 && (req.All || filtered):
		writeError(w, http.StatusBadRequest, `give "ids", or filters, or "all": true, not several`)
		return
	case len(req.IDs) > 0:
		n, err = dlq.Delete(ctx, s.js, s.cfg.Names, req.IDs...)
	case filtered || req.All:
		n, err = dlq.Purge(ctx, s.js, s.cfg.Names, dlq.Filter{Workflow: req.Workflow, Node: req.Node, RunID: req.RunID, Reason: req.Reason})
	default:
		writeError(w, http.StatusBadRequest, `say what to purge: "ids": [...], filters (workflow, node, run_id, reason), or "all": true`)
		return
	}
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, PurgeResponse{Purged: n})
}

func (s *Server) apiBreakers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := apiCtx(r)
	defer cancel()
	b, err := ReadBreakers(ctx, s.js, s.cfg.Names)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if b == nil {
		b = []BreakerView{}
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *Server) apiWorkers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := apiCtx(r)
	defer cancel()
	ws, err := ReadWorkers(ctx, s.js, s.cfg.Names)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if ws == nil {
		writeJSON(w, http.StatusOK, []struct{}{})
		return
	}
	writeJSON(w, http.StatusOK, ws)
}

func (s *Server) apiHealth(w http.ResponseWriter, _ *http.Request) {
	out := []HealthView{}
	if s.cfg.Health != nil {
		out = s.cfg.Health.Snapshot()
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeBody reads a JSON body into v; an empty body leaves v as it is.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errors.New("the body is not the JSON expected: " + workflow.OneLine(err.Error(), 200))
	}
	return nil
}

// statusOf maps an error onto an HTTP status.
func statusOf(err error) int {
	var refused *dlq.RefusedError
	var ended *checkpoint.EndedError
	switch {
	case errors.Is(err, checkpoint.ErrNotFound), errors.Is(err, dlq.ErrNoEntry):
		return http.StatusNotFound
	case errors.As(err, &refused), errors.As(err, &ended), errors.Is(err, checkpoint.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, nats.ErrPermissionViolation):
		return http.StatusForbidden
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}
