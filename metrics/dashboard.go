package metrics

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetflow-dev/jetflow/checkpoint"
	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/dlq"
	"github.com/jetflow-dev/jetflow/workflow"
)

//go:embed web
var webFS embed.FS

// staticFS returns what /static/ serves: web/static (the stylesheet and the script).
func staticFS() fs.FS {
	sub, _ := fs.Sub(webFS, "web") // "web" is a valid path: fs.Sub cannot fail
	return sub
}

// pageTemplate is the layout with one page's "content" (and optional "controls").
type pageTemplate = template.Template

// templateFuncs are the helpers the page templates use.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"ago":   ago,
		"dur":   fmtDur,
		"lat":   fmtLatency,
		"pct":   func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
		"time":  fmtDateTime,
		"timep": fmtTimePtr,
		"datetimep": func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return fmtDateTime(*t)
		},
		"add":      func(a, b int) int { return a + b },
		"json":     func(v any) string { b, _ := json.Marshal(v); return string(b) },
		"pretty":   prettyJSON,
		"rate":     func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
		"join":     joinComma,
		"replayID": func(id uint64) string { return `{"ids":[` + strconv.FormatUint(id, 10) + `]}` },
		"usd":      FormatUSD,
		"usdp": func(v *float64) string {
			if v == nil {
				return ""
			}
			return FormatUSD(*v)
		},
		"costs": sortedCosts,
	}
}

// FormatUSD formats a cost in dollars: cents from a dollar, four places from a cent,
// micro-dollars below.
func FormatUSD(v float64) string {
	switch {
	case v >= 1:
		return "$" + strconv.FormatFloat(v, 'f', 2, 64)
	case v >= 0.01:
		return "$" + strconv.FormatFloat(v, 'f', 4, 64)
	}
	return "$" + strconv.FormatFloat(v, 'f', 6, 64)
}

// cost is one line of a spend table.
type cost struct {
	Name string
	USD  float64
}

// sortedCosts lists m's costs, largest first.
func sortedCosts(m map[string]float64) []cost {
	out := make([]cost, 0, len(m))
	for k, v := range m {
		out = append(out, cost{k, v})
	}
	slices.SortFunc(out, func(a, b cost) int {
		if a.USD != b.USD {
			if a.USD > b.USD {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// parsePages parses the layout with each page.
func parsePages() (map[string]*pageTemplate, error) {
	out := map[string]*pageTemplate{}
	funcs := templateFuncs()
	for _, name := range []string{"overview", "runs", "run", "dlq", "breakers"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// view is what every page template gets.
type view struct {
	Title  string
	Nav    string
	Admin  bool // an admin token is configured: show the actions
	Hidden bool // payloads hidden
	Prefix string
	// Version of jetflow.
	Version string
	// Live pages refresh their content on every server event.
	Live bool
	// Error says what could not be read.
	Error string
	Data  any
}

// render writes page name with data; with ?partial=1 only its content (for live refresh).
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, v view) {
	v.Admin, v.Hidden, v.Prefix, v.Version = s.cfg.AdminToken != "", !s.cfg.ShowPayloads, s.cfg.Names.Prefix(), s.cfg.Version
	tmpl := "layout.html"
	if r.URL.Query().Get("partial") == "1" {
		tmpl = "content"
	}
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, tmpl, v); err != nil {
		s.log.Error("dashboard template failed", "page", name, "err", err)
		http.Error(w, "the page could not be drawn: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}

// overviewData is the overview page.
type overviewData struct {
	*Overview
	Runs       []*checkpoint.RunSummary
	RunCounts  map[string]int
	Health     []HealthView
	Pending    uint64
	AckPending int
	// Spend is today's model spend (UTC), nil when it cannot be read.
	Spend *checkpoint.SpendTotal
}

func (s *Server) pageOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := apiCtx(r)
	defer cancel()
	d := overviewData{Overview: ReadOverview(ctx, s.js, s.cfg.Names, s.act), RunCounts: map[string]int{}}
	v := view{Title: "Overview", Nav: "overview", Live: true, Data: &d}
	runs, err := s.store.ListRuns(ctx, checkpoint.RunFilter{})
	if err != nil {
		v.Error = err.Error()
	}
	for _, run := range runs {
		d.RunCounts[run.Status]++
	}
	d.Runs = runs[:min(len(runs), 10)]
	if sp, err := s.spendToday(ctx); err == nil {
		d.Spend = sp
	}
	for _, b := range d.Backlog {
		d.Pending += b.Pending
		d.AckPending += b.AckPending
	}
	if s.cfg.Health != nil {
		d.Health = s.cfg.Health.Snapshot()
	}
	s.render(w, r, "overview", v)
}

// runsData is the runs page.
type runsData struct {
	Runs      []*checkpoint.RunSummary
	Statuses  []string
	Workflows []string
	Status    string
	Workflow  string
	Limit     int
}

func (s *Server) pageRuns(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Runs", Nav: "runs", Live: true}
	f, err := runFilter(r)
	d := runsData{Statuses: checkpoint.RunStatuses, Status: f.Status, Workflow: f.Workflow, Limit: f.Limit}
	v.Data = &d
	if err != nil {
		v.Error = err.Error()
		s.render(w, r, "runs", v)
		return
	}
	ctx, cancel := apiCtx(r)
	defer cancel()
	if d.Runs, err = s.store.ListRuns(ctx, f); err != nil {
		v.Error = err.Error()
	}
	if refs, err := s.store.Workflows(ctx); err == nil {
		for _, ref := range refs {
			d.Workflows = append(d.Workflows, ref.Name)
		}
	}
	s.render(w, r, "runs", v)
}

// runData is the run page.
type runData struct {
	Run       *RunDetail
	Nodes     []nodeRow
	Graph     *graph
	Waterfall *waterfall
	Running   bool
}

// nodeRow is one node of the run page's table.
type nodeRow struct {
	Name, Type string
	Needs      []string
	*checkpoint.NodeView
	Took   string
	Output string
}

func (s *Server) pageRun(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v := view{Title: "Run " + id, Nav: "runs", Live: true}
	ctx, cancel := apiCtx(r)
	defer cancel()
	rv, err := s.store.Describe(ctx, id)
	if err != nil {
		v.Error = err.Error()
		if statusOf(err) == http.StatusNotFound {
			w.WriteHeader(http.StatusNotFound)
		}
		s.render(w, r, "run", v)
		return
	}
	def, err := s.definitionOf(ctx, id)
	if err != nil {
		v.Error = err.Error()
		s.render(w, r, "run", v)
		return
	}
	consumer.MarkUnserved(ctx, s.js, s.cfg.Names, rv)
	d := &runData{Run: s.redactRun(rv), Running: rv.Status == checkpoint.RunRunning}
	now := time.Now()
	for _, n := range def.Nodes {
		nv := rv.Nodes[n.Name]
		if nv == nil {
			nv = &checkpoint.NodeView{Status: checkpoint.StatusPending}
		}
		row := nodeRow{Name: n.Name, Type: n.Type, Needs: n.Needs, NodeView: nv}
		if nv.StartedAt != nil && nv.EndedAt != nil && !nv.EndedAt.Before(*nv.StartedAt) {
			row.Took = fmtDur(nv.EndedAt.Sub(*nv.StartedAt))
		}
		if len(nv.Output) > 0 {
			row.Output = prettyJSON(nv.Output)
		}
		d.Nodes = append(d.Nodes, row)
	}
	d.Graph = layoutGraph(def, rv)
	d.Waterfall = layoutWaterfall(def, rv, now)
	v.Data = d
	s.render(w, r, "run", v)
}

// definitionOf reads the definition a run was started with.
func (s *Server) definitionOf(ctx context.Context, id string) (*workflow.Workflow, error) {
	run, err := s.store.Run(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.store.Definition(ctx, run.Def)
}

// dlqData is the DLQ page.
type dlqData struct {
	Groups  []dlqGroup
	Entries []*dlq.Entry
	Total   int
	Shown   int
}

// dlqGroup is a group with the IDs its buttons act on.
type dlqGroup struct {
	dlq.GroupCount
	IDs string // JSON body {"ids": [...]}
}

// dlqPageLimit caps the entries the DLQ page reads.
const dlqPageLimit = 10000

func (s *Server) pageDLQ(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Dead letters", Nav: "dlq", Live: true}
	ctx, cancel := apiCtx(r)
	defer cancel()
	entries, err := dlq.List(ctx, s.js, s.cfg.Names, dlq.Filter{Limit: dlqPageLimit})
	if err != nil {
		v.Error = err.Error()
	}
	d := &dlqData{Total: len(entries)}
	byGroup := map[dlq.GroupCount][]uint64{}
	for _, e := range entries {
		k := dlq.GroupCount{Workflow: e.Workflow, Node: e.Node, Reason: e.Reason}
		byGroup[k] = append(byGroup[k], e.ID)
	}
	for _, g := range dlq.Group(entries) {
		k := g
		k.Count = 0
		body, _ := json.Marshal(map[string][]uint64{"ids": byGroup[k]})
		d.Groups = append(d.Groups, dlqGroup{GroupCount: g, IDs: string(body)})
	}
	// Newest first, 200 at most.
	slices.Reverse(entries)
	d.Entries = entries[:min(len(entries), 200)]
	for _, e := range d.Entries {
		s.redactEntry(e)
	}
	d.Shown = len(d.Entries)
	v.Data = d
	s.render(w, r, "dlq", v)
}

// breakersData is the breakers page.
type breakersData struct {
	Breakers []BreakerView
	Health   []HealthView
	Workers  []consumer.Presence
}

func (s *Server) pageBreakers(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Breakers & health", Nav: "breakers", Live: true}
	ctx, cancel := apiCtx(r)
	defer cancel()
	d := &breakersData{}
	var err error
	if d.Breakers, err = ReadBreakers(ctx, s.js, s.cfg.Names); err != nil {
		v.Error = err.Error()
	}
	if s.cfg.Health != nil {
		d.Health = s.cfg.Health.Snapshot()
	}
	v.Data = d
	s.render(w, r, "breakers", v)
}

// events streams Server-Sent Events: an "overview" event (the Overview as JSON) at once and
// every EventInterval, until the client goes away or the server stops. Dashboard pages
// refresh their content on each.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func() error {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		o := ReadOverview(ctx, s.js, s.cfg.Names, s.act)
		cancel()
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: overview\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", s.cfg.EventInterval.Milliseconds()); err != nil {
		return
	}
	if send() != nil {
		return
	}
	t := time.NewTicker(s.cfg.EventInterval)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
			if send() != nil {
				return
			}
		}
	}
}

// graph is a workflow drawn as SVG: nodes in layers by depth, edges as curves.
type graph struct {
	Width, Height int
	Nodes         []graphNode
	Edges         []string // SVG path data
}

type graphNode struct {
	Name, Type, Status string
	Attempts           int
	Items              string // a for_each node's "done/total" once its list was taken
	Child              string // the run a subflow node started
	X, Y, W, H         int
	TX, TY             int // label position
}

// Graph geometry, in SVG units.
const (
	gNodeW, gNodeH = 150, 44
	gColGap        = 70
	gRowGap        = 22
	gPad           = 16
)

// layoutGraph places each node in the column of its depth (the longest path from a root),
// in definition order within a column, columns centred vertically.
func layoutGraph(def *workflow.Workflow, rv *checkpoint.RunView) *graph {
	depth := map[string]int{}
	var depthOf func(name string, seen int) int
	depthOf = func(name string, seen int) int {
		if d, ok := depth[name]; ok {
			return d
		}
		d := 0
		if n := def.Lookup(name); n != nil && seen < len(def.Nodes) {
			for _, p := range n.Needs {
				d = max(d, depthOf(p, seen+1)+1)
			}
		}
		depth[name] = d
		return d
	}
	var cols [][]*workflow.Node
	for _, n := range def.Nodes {
		d := depthOf(n.Name, 0)
		for len(cols) <= d {
			cols = append(cols, nil)
		}
		cols[d] = append(cols[d], n)
	}
	rows := 0
	for _, c := range cols {
		rows = max(rows, len(c))
	}
	g := &graph{Width: 2*gPad + len(cols)*gNodeW + max(len(cols)-1, 0)*gColGap, Height: 2*gPad + rows*gNodeH + max(rows-1, 0)*gRowGap}
	pos := map[string]graphNode{}
	for ci, c := range cols {
		colH := len(c)*gNodeH + (len(c)-1)*gRowGap
		top := (g.Height - colH) / 2
		for ri, n := range c {
			gn := graphNode{Name: n.Name, Type: n.Type, Status: checkpoint.StatusPending,
				X: gPad + ci*(gNodeW+gColGap), Y: top + ri*(gNodeH+gRowGap), W: gNodeW, H: gNodeH}
			if nv := rv.Nodes[n.Name]; nv != nil {
				gn.Status, gn.Attempts, gn.Child = nv.Status, nv.Attempts, nv.Child
				if it := nv.Items; it != nil {
					gn.Items = fmt.Sprintf("%d/%d", it.Done, it.Count)
				}
			}
			gn.TX, gn.TY = gn.X+10, gn.Y+18
			pos[n.Name] = gn
			g.Nodes = append(g.Nodes, gn)
		}
	}
	for _, n := range def.Nodes {
		to := pos[n.Name]
		for _, p := range n.Needs {
			from, ok := pos[p]
			if !ok {
				continue
			}
			x1, y1 := from.X+from.W, from.Y+from.H/2
			x2, y2 := to.X, to.Y+to.H/2
			mx := (x1 + x2) / 2
			g.Edges = append(g.Edges, fmt.Sprintf("M%d %d C%d %d, %d %d, %d %d", x1, y1, mx, y1, mx, y2, x2-4, y2))
		}
	}
	return g
}

// waterfall is the run's timing: one bar per node that started, from its start to its end
// (or now while it runs), on the run's time axis.
type waterfall struct {
	Width, Height int
	Total         string
	Rows          []waterfallRow
	Ticks         []waterfallTick
}

type waterfallRow struct {
	Name, Status, Took string
	Y, X, W            int
	TY                 int
}

type waterfallTick struct {
	X     int
	Label string
}

// Waterfall geometry.
const (
	wLabelW = 160
	wBarW   = 640
	wRowH   = 24
)

func layoutWaterfall(def *workflow.Workflow, rv *checkpoint.RunView, now time.Time) *waterfall {
	start := rv.CreatedAt
	end := start
	for _, n := range def.Nodes {
		nv := rv.Nodes[n.Name]
		if nv == nil || nv.StartedAt == nil {
			continue
		}
		e := now
		if nv.EndedAt != nil && !nv.EndedAt.Before(*nv.StartedAt) && nv.Status != checkpoint.StatusRunning {
			e = *nv.EndedAt
		}
		end = laterOf(end, e)
	}
	if rv.EndedAt != nil {
		end = laterOf(end, *rv.EndedAt)
	}
	total := end.Sub(start)
	if total <= 0 {
		total = time.Millisecond
	}
	scale := func(t time.Time) int {
		return wLabelW + int(math.Round(float64(t.Sub(start))/float64(total)*wBarW))
	}
	wf := &waterfall{Width: wLabelW + wBarW + 70, Total: fmtDur(total)}
	y := 22
	for _, n := range def.Nodes {
		nv := rv.Nodes[n.Name]
		row := waterfallRow{Name: n.Name, Status: checkpoint.StatusPending, Y: y, TY: y + 16, X: wLabelW}
		if nv != nil {
			row.Status = nv.Status
		}
		if nv != nil && nv.StartedAt != nil {
			e := now
			if nv.EndedAt != nil && !nv.EndedAt.Before(*nv.StartedAt) && nv.Status != checkpoint.StatusRunning {
				e = *nv.EndedAt
			}
			row.X = scale(*nv.StartedAt)
			row.W = max(scale(e)-row.X, 2)
			row.Took = fmtDur(e.Sub(*nv.StartedAt))
		}
		wf.Rows = append(wf.Rows, row)
		y += wRowH
	}
	for i := 0; i <= 4; i++ {
		wf.Ticks = append(wf.Ticks, waterfallTick{X: wLabelW + i*wBarW/4, Label: fmtDur(total * time.Duration(i) / 4)})
	}
	wf.Height = y + 6
	return wf
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fmtDur formats a duration briefly: 850ms, 12.3s, 4m05s, 2h10m.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return strconv.Itoa(int(d.Milliseconds())) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour && d%time.Minute == 0:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// fmtLatency formats a latency percentile ("-" for none).
func fmtLatency(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmtDur(d)
}

// ago formats how long ago t was.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmtDur(time.Since(t).Truncate(time.Second)) + " ago"
}

// fmtDateTime formats t as the dashboard shows a moment in full: UTC, to the second.
func fmtDateTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

// fmtTimePtr formats t as a time of day, to the millisecond (node timings); "-" for nil.
func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("15:04:05.000")
}

func prettyJSON(v any) string {
	var raw json.RawMessage
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	default:
		b, _ := json.Marshal(x)
		raw = b
	}
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		return string(raw)
	}
	return buf.String()
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

// spendToday sums today's model spend (UTC), read at most every spendEvery.
func (s *Server) spendToday(ctx context.Context) (*checkpoint.SpendTotal, error) {
	s.spendMu.Lock()
	defer s.spendMu.Unlock()
	now := time.Now().UTC()
	if s.spend != nil && now.Sub(s.spendAt) < spendEvery {
		return s.spend, nil
	}
	sp, err := s.store.SpendSince(ctx, now.Truncate(24*time.Hour))
	if err != nil {
		return nil, err
	}
	s.spend, s.spendAt = sp, now
	return sp, nil
}

// spendEvery is how often the overview sums the spend again.
const spendEvery = 10 * time.Second
