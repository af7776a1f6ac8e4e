package check

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"sigs.k8s.io/yaml"
)

// grafanaExportKeys are keys Grafana writes only when it exports a dashboard "for sharing
// externally": the data source inputs to ask for on import, the plugins required and the
// library panels. They are not part of the dashboard model, so the SDK's type lacks them.
var grafanaExportKeys = []string{"__inputs", "__requires", "__elements"}

// decodeDashboard decodes a dashboard JSON strictly into the Grafana Foundation SDK's
// dashboard type, with every panel and query plugin of the SDK registered, so a panel's
// options and a query decode strictly into their plugin's types too.
func decodeDashboard(t *testing.T, data []byte) (*dashboard.Dashboard, error) { //nolint:staticcheck // deploy/grafana holds the classic (v1) JSON model, which this type describes
	t.Helper()
	plugins.RegisterDefaultPlugins()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, err
	}
	for _, key := range grafanaExportKeys {
		raw, ok := fields[key]
		if !ok {
			continue
		}
		// Provisioning substitutes no import input: the dashboard must need none.
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil || len(list) > 0 {
			return nil, fmt.Errorf("%s is %s: a provisioned dashboard gets no import inputs, so it must be empty", key, raw)
		}
		delete(fields, key)
	}
	model, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	var strictErrs cog.BuildErrors
	if err := new(dashboard.Dashboard).UnmarshalJSONStrict(model); err != nil && !errors.As(err, &strictErrs) { //nolint:staticcheck // deploy/grafana holds the classic (v1) JSON model, which this type describes
		return nil, err
	}
	var refused cog.BuildErrors
	for _, e := range strictErrs {
		if !pluginDefault(e) {
			refused = append(refused, e)
		}
	}
	if len(refused) > 0 {
		return nil, refused
	}
	// The strict decoder drops what it refused: decode again, now that only plugin
	// defaults were missing, to keep every panel's options.
	var d dashboard.Dashboard //nolint:staticcheck // deploy/grafana holds the classic (v1) JSON model, which this type describes
	if err := json.Unmarshal(model, &d); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// panelOption is the path of a panel's option, in a row or not.
var panelOption = regexp.MustCompile(`^panels\[\d+\](\.panels\[\d+\])?\.options\.`)

// pluginDefault reports whether a strict decoding error is a panel option missing from
// the JSON. The SDK's types mark every option of a panel plugin required, but Grafana
// fills a missing one with the plugin's default when it loads a dashboard, and exports
// leave defaults out: that is no error. Every other error, an unknown field or a wrong
// type anywhere (in options too) or a missing field outside them, stays one.
func pluginDefault(e *cog.BuildError) bool {
	return e.Message == "required field is missing from input" && panelOption.MatchString(e.Path)
}

// variableRef is a reference to a dashboard variable in a query: $name, ${name} or
// [[name]]; $__name are Grafana's built-ins.
var variableRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// TestGrafanaDashboard decodes deploy/grafana/jetflow.json strictly into the SDK's
// dashboard type and checks its structure: title and uid, the data source variable, and
// every panel of a known plugin type with the Prometheus data source and queries, each
// with an expr whose variables the dashboard defines.
func TestGrafanaDashboard(t *testing.T) {
	d, err := decodeDashboard(t, readDeploy(t, "grafana", "jetflow.json"))
	if err != nil {
		t.Fatalf("deploy/grafana/jetflow.json does not decode strictly into dashboard.Dashboard: %v", err)
	}
	if d.Title == nil || *d.Title == "" {
		t.Error("dashboard has no title")
	}
	if d.Uid == nil || *d.Uid == "" || len(*d.Uid) > 40 {
		t.Errorf("dashboard uid %v: want 1 to 40 characters (Grafana's limit)", d.Uid)
	}

	variables := map[string]dashboard.VariableModel{}
	for _, v := range d.Templating.List {
		variables[v.Name] = v
	}
	source, ok := variables["datasource"]
	if !ok || source.Type != dashboard.VariableTypeDatasource {
		t.Fatalf("no data source variable `datasource`: %+v", source)
	}
	if source.Query == nil || source.Query.String == nil || *source.Query.String != "prometheus" {
		t.Errorf("variable datasource: query %+v, want the prometheus type", source.Query)
	}

	var panels []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, *p.Panel)
		case p.RowPanel != nil:
			panels = append(panels, p.RowPanel.Panels...)
		}
	}
	if len(panels) == 0 {
		t.Fatal("dashboard has no panel")
	}
	ids := map[uint32]bool{}
	for _, p := range d.Panels {
		if p.RowPanel != nil {
			ids[p.RowPanel.Id] = true
		}
	}
	for _, p := range panels {
		title := ""
		if p.Title != nil {
			title = *p.Title
		}
		if title == "" {
			t.Errorf("panel %v has no title", p.Id)
		}
		if p.Id == nil || ids[*p.Id] {
			t.Errorf("panel %q: id %v missing or not unique", title, p.Id)
		} else {
			ids[*p.Id] = true
		}
		if _, ok := cog.ConfigForPanelcfgVariant(p.Type); !ok {
			t.Errorf("panel %q: type %q is no panel plugin the SDK knows", title, p.Type)
		}
		if p.Datasource == nil || p.Datasource.Type == nil || *p.Datasource.Type != "prometheus" ||
			p.Datasource.Uid == nil || *p.Datasource.Uid != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the prometheus variable ${datasource}", title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		refIDs := map[string]bool{}
		for i, target := range p.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				t.Errorf("panel %q, query %d: a %T, want a Prometheus query", title, i, target)
				continue
			}
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q, query %d: no expr", title, i)
			}
			if q.RefId == nil || *q.RefId == "" || refIDs[*q.RefId] {
				t.Errorf("panel %q, query %d: refId %v missing or not unique", title, i, q.RefId)
			} else {
				refIDs[*q.RefId] = true
			}
			for _, m := range variableRef.FindAllStringSubmatch(q.Expr, -1) {
				name := m[1] + m[2] + m[3]
				if strings.HasPrefix(name, "__") {
					continue
				}
				if _, ok := variables[name]; !ok {
					t.Errorf("panel %q: expr uses $%s, which the dashboard does not define", title, name)
				}
			}
		}
	}
}

// TestGrafanaStrictDecodeRefuses keeps decodeDashboard honest: an unknown dashboard field
// and an unknown field of a Prometheus query are refused.
func TestGrafanaStrictDecodeRefuses(t *testing.T) {
	base := `{"title":"t","uid":"u","schemaVersion":39,"templating":{"list":[]},"annotations":{"list":[]},` +
		`"panels":[{"id":1,"type":"timeseries","title":"p","datasource":{"type":"prometheus","uid":"x"},` +
		`"targets":[{"refId":"A","datasource":{"type":"prometheus","uid":"x"},"%s":"up"}]}]%s}`
	d, err := decodeDashboard(t, []byte(fmt.Sprintf(base, "expr", "")))
	if err != nil {
		t.Fatalf("a valid dashboard is refused: %v", err)
	}
	if q, ok := d.Panels[0].Panel.Targets[0].(*prometheus.Dataquery); !ok || q.Expr != "up" {
		t.Fatalf("query decoded as %#v, want a Prometheus query of expr up", d.Panels[0].Panel.Targets[0])
	}
	for name, doc := range map[string]string{
		"unknown dashboard field": fmt.Sprintf(base, "expr", `,"titel":"t"`),
		"unknown query field":     fmt.Sprintf(base, "exprr", ""),
		"unknown option field": strings.Replace(fmt.Sprintf(base, "expr", ""), `"targets"`,
			`"options":{"legend":{"displayMode":"list","placement":"bottom","showLegend":true,"shwLegend":true}},"targets"`, 1),
		"wrong option type": strings.Replace(fmt.Sprintf(base, "expr", ""), `"targets"`,
			`"options":{"legend":{"displayMode":"list","placement":"bottom","showLegend":"yes"}},"targets"`, 1),
		"import inputs": strings.Replace(fmt.Sprintf(base, "expr", ""), `{"title"`,
			`{"__inputs":[{"name":"DS_PROMETHEUS","type":"datasource","pluginId":"prometheus"}],"title"`, 1),
		"missing schemaVersion": strings.Replace(fmt.Sprintf(base, "expr", ""), `"schemaVersion":39,`, "", 1),
	} {
		if _, err := decodeDashboard(t, []byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
}

// grafanaDatasources is Grafana's data source provisioning file, the fields jetflow uses.
type grafanaDatasources struct {
	APIVersion  int `json:"apiVersion"`
	Datasources []struct {
		Name      string         `json:"name"`
		UID       string         `json:"uid"`
		Type      string         `json:"type"`
		Access    string         `json:"access"`
		URL       string         `json:"url"`
		IsDefault bool           `json:"isDefault"`
		Editable  bool           `json:"editable"`
		JSONData  map[string]any `json:"jsonData"`
	} `json:"datasources"`
}

// grafanaDashboards is Grafana's dashboard provisioning file, the fields jetflow uses.
type grafanaDashboards struct {
	APIVersion int `json:"apiVersion"`
	Providers  []struct {
		Name                  string `json:"name"`
		Folder                string `json:"folder"`
		Type                  string `json:"type"`
		DisableDeletion       bool   `json:"disableDeletion"`
		AllowUIUpdates        bool   `json:"allowUiUpdates"`
		UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `json:"path"`
			FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
		} `json:"options"`
	} `json:"providers"`
}

// TestGrafanaProvisioning decodes the provisioning files strictly and checks them against
// compose.yaml: the dashboards provider reads the directory compose mounts the dashboard
// into, and the data source is compose's Prometheus, under the uid the dashboard selects.
func TestGrafanaProvisioning(t *testing.T) {
	var sources grafanaDatasources
	if err := yaml.UnmarshalStrict(readDeploy(t, "grafana-provisioning", "datasources", "prometheus.yaml"), &sources); err != nil {
		t.Fatalf("datasources/prometheus.yaml: %v", err)
	}
	var boards grafanaDashboards
	if err := yaml.UnmarshalStrict(readDeploy(t, "grafana-provisioning", "dashboards", "jetflow.yaml"), &boards); err != nil {
		t.Fatalf("dashboards/jetflow.yaml: %v", err)
	}
	if sources.APIVersion != 1 || boards.APIVersion != 1 {
		t.Errorf("apiVersion %d and %d, want 1 (Grafana's provisioning format)", sources.APIVersion, boards.APIVersion)
	}

	project, err := loadCompose(t, deployPath("compose.yaml"), composeEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	grafana, err := project.GetService("grafana")
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]types.ServiceVolumeConfig{}
	for _, v := range grafana.Volumes {
		mounts[v.Target] = v
	}
	provisioning, ok := mounts["/etc/grafana/provisioning"]
	if !ok || !samePath(t, provisioning.Source, deployPath("grafana-provisioning")) {
		t.Errorf("compose mounts %+v at /etc/grafana/provisioning, want deploy/grafana-provisioning", provisioning)
	}
	var dashboardTarget string
	for target, v := range mounts {
		if v.Type == types.VolumeTypeBind && samePath(t, v.Source, deployPath("grafana", "jetflow.json")) {
			dashboardTarget = target
		}
	}
	if dashboardTarget == "" {
		t.Fatal("compose does not mount deploy/grafana/jetflow.json into grafana")
	}
	if len(boards.Providers) != 1 {
		t.Fatalf("%d dashboard providers, want 1", len(boards.Providers))
	}
	provider := boards.Providers[0]
	if provider.Type != "file" || path.Clean(provider.Options.Path) != path.Dir(dashboardTarget) {
		t.Errorf("dashboard provider reads %s %q; compose mounts the dashboard at %s", provider.Type, provider.Options.Path, dashboardTarget)
	}

	if len(sources.Datasources) != 1 {
		t.Fatalf("%d data sources, want 1", len(sources.Datasources))
	}
	ds := sources.Datasources[0]
	d, err := decodeDashboard(t, readDeploy(t, "grafana", "jetflow.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && (v.Current == nil || v.Current.Value.String == nil || *v.Current.Value.String != ds.UID) {
			t.Errorf("the dashboard's datasource variable selects %+v, the provisioned data source has uid %q", v.Current, ds.UID)
		}
	}
	if ds.Type != "prometheus" || !ds.IsDefault {
		t.Errorf("data source type %q default %v, want the default prometheus", ds.Type, ds.IsDefault)
	}
	u, err := url.Parse(ds.URL)
	if err != nil {
		t.Fatal(err)
	}
	prom, err := project.GetService(u.Hostname())
	if err != nil {
		t.Fatalf("the data source URL %s names no compose service: %v", ds.URL, err)
	}
	if !servesPort(prom, u.Port()) {
		t.Errorf("compose service %s does not listen on %s (data source %s)", prom.Name, u.Port(), ds.URL)
	}
}

// samePath reports whether two paths name the same file.
func samePath(t *testing.T, a, b string) bool {
	t.Helper()
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	return absA == absB
}

// servesPort reports whether a compose service publishes or exposes a container port.
func servesPort(s types.ServiceConfig, port string) bool {
	for _, p := range s.Ports {
		if strconv.FormatUint(uint64(p.Target), 10) == port {
			return true
		}
	}
	for _, e := range s.Expose {
		if e == port {
			return true
		}
	}
	return false
}
