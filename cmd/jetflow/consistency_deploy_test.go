package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/pflag"

	"github.com/jetflow-dev/jetflow/consumer"
	"github.com/jetflow-dev/jetflow/setup"
	"github.com/jetflow-dev/jetflow/workflow"
)

// The deploy/ files name things the code also names: streams, consumers, buckets, subjects,
// CLI flags, HTTP paths and ports. These tests read every file and check each name against
// the code, so a rename on either side fails here instead of in someone's cluster.

// obj is a decoded YAML or JSON object.
type obj = map[string]any

// dig walks v along keys (map keys, or list indexes as decimal strings).
func dig(v any, keys ...string) any {
	for _, k := range keys {
		switch x := v.(type) {
		case obj:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	return fmt.Sprint(v)
}

func num(v any) int {
	n, err := strconv.Atoi(str(v))
	if err != nil {
		return -1
	}
	return n
}

func list(v any) []any { l, _ := v.([]any); return l }

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, str(x))
	}
	return out
}

// readDocs decodes every YAML document of a file (JSON is YAML).
func readDocs(t *testing.T, path string) []obj {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []obj
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d obj
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func readDoc(t *testing.T, path string) obj {
	t.Helper()
	docs := readDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: want one YAML document, got %d", path, len(docs))
	}
	return docs[0]
}

func deployPath(p string) string { return filepath.Join(deployDir, filepath.FromSlash(p)) }

// TestDeployFilesParse parses every YAML and JSON file under deploy/.
func TestDeployFilesParse(t *testing.T) {
	t.Parallel()
	n := 0
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".json":
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", path, err)
			}
			n++
		case ".yaml", ".yml":
			readDocs(t, path)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("parsed only %d YAML and JSON files under deploy/", n)
	}
}

// cliArgs checks that args (a jetflow command line without the program name) name an existing
// command and only flags it has, with values of the right type, and returns the flags given
// (the values of unknown ones too, so that one missing flag is reported once, not again by
// every check that reads its value).
func cliArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	root := (&app{stdout: io.Discard, stderr: io.Discard}).rootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Errorf("%s: `jetflow %s`: no such command", where, strings.Join(args, " "))
		return map[string]string{}
	}
	got := map[string]string{}
	var known []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") {
			known = append(known, a)
			continue
		}
		if f := cmd.Flag(name); f != nil {
			known = append(known, a)
			continue
		}
		t.Errorf("%s: `jetflow %s` has no flag --%s; the deploy files use it (wire it in cmd/jetflow, or fix the file)", where, strings.TrimPrefix(cmd.CommandPath(), "jetflow "), name)
		if !hasValue && i+1 < len(rest) && !strings.HasPrefix(rest[i+1], "-") {
			i++
			value = rest[i]
		}
		got[name] = value
	}
	if err := cmd.ParseFlags(known); err != nil {
		t.Errorf("%s: `jetflow %s`: %v", where, strings.Join(args, " "), err)
	}
	cmd.Flags().Visit(func(f *pflag.Flag) { got[f.Name] = f.Value.String() })
	return got
}

// natsConf loads a file of deploy/nats as the server does, with a value for every password
// the files read from the environment.
func natsConf(t *testing.T, file string) *server.Options {
	t.Helper()
	dir := t.TempDir()
	confs, err := filepath.Glob(deployPath("nats/*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range confs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = passwordRef.ReplaceAll(b, []byte(`"x"`))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o, err := server.ProcessConfigFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("deploy/nats/%s: %v", file, err)
	}
	return o
}

// passwordRef matches the environment references of deploy/nats/accounts.conf.
var passwordRef = regexp.MustCompile(`\$(JETFLOW_[A-Z_]+_PASSWORD)`)

// natsAccounts loads deploy/nats/accounts.conf.
func natsAccounts(t *testing.T) *server.Options { return natsConf(t, "accounts.conf") }

func natsUser(t *testing.T, o *server.Options, name string) *server.User {
	t.Helper()
	for _, u := range o.Users {
		if u.Username == name {
			return u
		}
	}
	t.Fatalf("deploy/nats/accounts.conf has no user %q", name)
	return nil
}

// subjectMatches reports whether subject is matched by pattern (NATS wildcards * and >).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// mayPublish reports whether the user may publish to subject: an allow matches and no deny.
func mayPublish(u *server.User, subject string) bool {
	if u.Permissions == nil || u.Permissions.Publish == nil {
		return true
	}
	pub := u.Permissions.Publish
	allowed := pub.Allow == nil
	for _, a := range pub.Allow {
		allowed = allowed || subjectMatches(a, subject)
	}
	for _, d := range pub.Deny {
		if subjectMatches(d, subject) {
			return false
		}
	}
	return allowed
}

// TestDeployNATSNames checks the subjects of deploy/nats/accounts.conf against the names the
// code uses: every stream and bucket a permission names exists, and each role may publish
// exactly what its part of DESIGN.md needs.
func TestDeployNATSNames(t *testing.T) {
	t.Parallel()
	o := natsAccounts(t)
	n := workflow.MustNames(workflow.DefaultPrefix)
	streams := []string{n.StepsStream(), n.DLQStream(), n.AdvisoryStream(),
		"KV_" + n.RunsBucket(), "KV_" + n.WorkflowsBucket(), "KV_" + n.BreakersBucket(), "KV_" + n.WorkersBucket(), "OBJ_" + n.BlobsBucket()}
	buckets := []string{n.RunsBucket(), n.WorkflowsBucket(), n.BreakersBucket(), n.WorkersBucket(), n.BlobsBucket()}

	// Every stream or bucket a permission names is one of ours (catches KV_jetflow_run).
	for _, u := range o.Users {
		if u.Permissions == nil || u.Permissions.Publish == nil {
			continue
		}
		for _, s := range append(slices.Clone(u.Permissions.Publish.Allow), u.Permissions.Publish.Deny...) {
			if b, ok := strings.CutPrefix(s, "$KV."); ok {
				if b, _, _ = strings.Cut(b, "."); !slices.Contains(buckets, b) {
					t.Errorf("user %s: %q names bucket %s; the buckets are %v", u.Username, s, b, buckets)
				}
			}
			if st := apiStream(s); st != "" && st != "*" && st != ">" && !slices.Contains(streams, st) {
				t.Errorf("user %s: %q names stream %s; the streams are %v", u.Username, s, st, streams)
			}
			if tok, _, _ := strings.Cut(s, "."); !strings.HasPrefix(tok, "$") && tok != n.Prefix() && s != ">" && tok != "_INBOX" {
				t.Errorf("user %s: %q is outside the prefix %s", u.Username, s, n.Prefix())
			}
		}
	}

	producer, worker, operator := natsUser(t, o, "producer"), natsUser(t, o, "worker"), natsUser(t, o, "operator")
	for _, u := range []*server.User{producer, worker, operator} {
		if u.Account == nil || u.Account.Name != "JETFLOW" {
			t.Errorf("user %s: want account JETFLOW (KEDA's ScaledObjects name it)", u.Username)
		}
	}
	step := n.StepSubject("noop", "wf", "node")
	sched := n.SchedSubject("run1", "node", 1)
	dlqSubj := n.DLQSubject("wf", "node")
	api := "$JS.API."
	cases := []struct {
		subject                    string
		producer, worker, operator bool
	}{
		{step, false, true, true},
		{n.StartSubject("wf"), true, false, true},
		{"$O." + n.BlobsBucket() + ".C.chunk1", true, true, true},
		{"$O." + n.BlobsBucket() + ".M.bmFtZQ==", true, true, true},
		{api + "STREAM.PURGE.OBJ_" + n.BlobsBucket(), false, true, true},
		{sched, false, true, true},
		{dlqSubj, false, true, true},
		{n.DLQMalformedSubject(), false, true, true},
		{"$KV." + n.RunsBucket() + "." + workflow.RunKey("run1"), false, true, true},
		{"$KV." + n.RunsBucket() + "." + workflow.NodeKey("run1", "node"), false, true, true},
		{"$KV." + n.RunsBucket() + "." + workflow.EndKey("run1"), false, true, true},
		{"$KV." + n.BreakersBucket() + ".key", false, true, true},
		{"$KV." + n.WorkersBucket() + ".worker-1", false, true, true},
		{"$KV." + n.WorkflowsBucket() + "." + workflow.WorkflowKey("wf"), false, false, true},
		{api + "STREAM.INFO.KV_" + n.RunsBucket(), true, true, true},
		{api + "STREAM.MSG.GET.KV_" + n.RunsBucket(), true, true, true},
		{api + "DIRECT.GET.KV_" + n.RunsBucket() + ".$KV." + n.RunsBucket() + "." + workflow.NodeKey("run1", "node"), true, true, true},
		{api + "DIRECT.GET.KV_" + n.WorkflowsBucket() + ".$KV." + n.WorkflowsBucket() + ".wf.x", true, true, true},
		{api + "CONSUMER.MSG.NEXT." + n.StepsStream() + "." + n.Consumer("noop"), false, true, true},
		{api + "CONSUMER.PAUSE." + n.StepsStream() + "." + n.Consumer("http"), false, true, true},
		{api + "CONSUMER.CREATE." + n.StepsStream() + "." + n.Consumer("custom") + "." + n.StepFilter("custom"), false, true, true},
		{"$JS.ACK." + n.StepsStream() + "." + n.Consumer("noop") + ".1.2.3.4.5", false, true, true},
		{api + "CONSUMER.MSG.NEXT." + n.StepsStream() + "." + n.StartConsumer(), false, true, true},
		{"$JS.ACK." + n.StepsStream() + "." + n.StartConsumer() + ".1.2.3.4.5", false, true, true},
		{api + "CONSUMER.MSG.NEXT." + n.AdvisoryStream() + "." + n.SweeperConsumer(), false, true, true},
		{api + "STREAM.MSG.DELETE." + n.StepsStream(), false, true, true},
		{api + "STREAM.MSG.DELETE." + n.DLQStream(), false, false, true},
		{api + "STREAM.PURGE." + n.DLQStream(), false, false, true},
		{api + "STREAM.DELETE." + n.StepsStream(), false, false, true},
		{api + "STREAM.UPDATE." + n.StepsStream(), false, false, true},
		{api + "CONSUMER.DELETE." + n.StepsStream() + "." + n.Consumer("noop"), false, false, true},
	}
	for _, c := range cases {
		for _, r := range []struct {
			u    *server.User
			want bool
		}{{producer, c.producer}, {worker, c.worker}, {operator, c.operator}} {
			if got := mayPublish(r.u, c.subject); got != r.want {
				t.Errorf("user %s may publish to %s: %v, want %v", r.u.Username, c.subject, got, r.want)
			}
		}
	}
}

// apiStream returns the stream a JetStream API, ack or flow-control subject names.
func apiStream(s string) string {
	tok := strings.Split(s, ".")
	switch {
	case strings.HasPrefix(s, "$JS.ACK."), strings.HasPrefix(s, "$JS.FC."):
		return tok[2]
	case strings.HasPrefix(s, "$JS.API.CONSUMER.DURABLE.CREATE."), strings.HasPrefix(s, "$JS.API.CONSUMER.MSG.NEXT."), strings.HasPrefix(s, "$JS.API.STREAM.MSG."):
		if len(tok) > 5 {
			return tok[5]
		}
	case strings.HasPrefix(s, "$JS.API.CONSUMER."), strings.HasPrefix(s, "$JS.API.STREAM."), strings.HasPrefix(s, "$JS.API.DIRECT.GET."):
		if len(tok) > 4 {
			return tok[4]
		}
	}
	return ""
}

// compose is deploy/compose.yaml's services.
func compose(t *testing.T) obj {
	t.Helper()
	services, _ := dig(readDoc(t, deployPath("compose.yaml")), "services").(obj)
	if services == nil {
		t.Fatal("deploy/compose.yaml has no services")
	}
	return services
}

// serverList splits a NATS_URL into host:port pairs.
func serverList(t *testing.T, where, s string) []string {
	t.Helper()
	var out []string
	for _, p := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.Scheme != "nats" || u.Port() == "" {
			t.Errorf("%s: NATS_URL entry %q is not nats://host:port", where, p)
			continue
		}
		out = append(out, u.Host)
	}
	return out
}

var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)`)

// TestDeployCompose checks deploy/compose.yaml against nats.conf, accounts.conf, the CLI,
// prometheus.yml and the Grafana provisioning.
func TestDeployCompose(t *testing.T) {
	t.Parallel()
	services := compose(t)
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "setup", "worker", "prometheus", "grafana"} {
		if services[name] == nil {
			t.Fatalf("deploy/compose.yaml: no service %s", name)
		}
	}

	// The NATS nodes: one config file, a name each, monitoring on 8222, data in /data.
	natsNodes := []string{"nats-1", "nats-2", "nats-3"}
	conf := natsConf(t, "nats.conf")
	var routes []string
	for _, r := range conf.Routes {
		routes = append(routes, r.Hostname()+":"+r.Port())
	}
	slices.Sort(routes)
	if want := []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}; !slices.Equal(routes, want) || conf.Cluster.Port != 6222 {
		t.Errorf("nats.conf: routes %v, cluster port %d; want %v on 6222 (the compose services)", routes, conf.Cluster.Port, want)
	}
	if conf.HTTPPort != 8222 || conf.Port != 4222 || conf.StoreDir != "/data" || !conf.JetStream {
		t.Errorf("nats.conf: port %d, http_port %d, store_dir %q, jetstream %v; want 4222, 8222, /data, on", conf.Port, conf.HTTPPort, conf.StoreDir, conf.JetStream)
	}
	if conf.SyncAlways || conf.SyncInterval != 0 {
		t.Errorf("nats.conf: sync_interval is set; deploy/README.md says the files keep the server default")
	}
	for _, name := range natsNodes {
		svc := services[name]
		cmd := strs(dig(svc, "command"))
		if !slices.Equal(cmd, []string{"--config", "/etc/nats/nats.conf", "--name", name}) {
			t.Errorf("service %s: command %v; want --config /etc/nats/nats.conf --name %s", name, cmd, name)
		}
		vols := strs(dig(svc, "volumes"))
		if !slices.Contains(vols, "./nats:/etc/nats:ro") || !slices.Contains(vols, name+":/data") {
			t.Errorf("service %s: volumes %v; want ./nats:/etc/nats:ro and %s:/data", name, vols, name)
		}
		if !strings.HasPrefix(str(dig(svc, "image")), "nats:2.") {
			t.Errorf("service %s: image %v; want nats:2.x", name, dig(svc, "image"))
		}
		if !strings.Contains(strings.Join(strs(dig(svc, "healthcheck", "test")), " "), ":8222/healthz") {
			t.Errorf("service %s: the health check should ask /healthz on the monitoring port 8222", name)
		}
		for _, pw := range []string{"JETFLOW_PRODUCER_PASSWORD", "JETFLOW_WORKER_PASSWORD", "JETFLOW_OPERATOR_PASSWORD"} {
			if dig(svc, "environment", pw) == nil {
				t.Errorf("service %s: no %s in its environment (accounts.conf reads it)", name, pw)
			}
		}
		if g := parseDur(t, str(dig(svc, "stop_grace_period"))); g <= conf.LameDuckDuration {
			t.Errorf("service %s: stop_grace_period %s must exceed lame_duck_duration %s", name, g, conf.LameDuckDuration)
		}
	}

	// The jetflow services: commands the CLI knows, the cluster's addresses, a defined user.
	accounts := natsAccounts(t)
	for _, name := range []string{"setup", "workflows", "worker"} {
		svc := services[name]
		if svc == nil {
			continue
		}
		where := "deploy/compose.yaml service " + name
		flags := cliArgs(t, where, strs(dig(svc, "command")))
		servers := serverList(t, where, str(dig(svc, "environment", "NATS_URL")))
		slices.Sort(servers)
		if want := []string{"nats-1:4222", "nats-2:4222", "nats-3:4222"}; !slices.Equal(servers, want) {
			t.Errorf("%s: NATS_URL servers %v; want %v", where, servers, want)
		}
		user := str(dig(svc, "environment", "NATS_USER"))
		natsUser(t, accounts, user)
		if pw := str(dig(svc, "environment", "NATS_PASSWORD")); !strings.Contains(pw, "JETFLOW_"+strings.ToUpper(user)+"_PASSWORD") {
			t.Errorf("%s: NATS_PASSWORD %q is not user %s's password", where, pw, user)
		}
		if dig(svc, "build", "context") != ".." || dig(svc, "build", "dockerfile") != "deploy/Dockerfile" {
			t.Errorf("%s: build should be context .. with dockerfile deploy/Dockerfile", where)
		}
		switch name {
		case "setup":
			if flags["replicas"] != "3" {
				t.Errorf("%s: want --replicas 3 on a 3-node cluster, got %q", where, flags["replicas"])
			}
			if user != "operator" {
				t.Errorf("%s: setup creates streams: it needs the operator user, not %s", where, user)
			}
		case "worker":
			if user != "worker" {
				t.Errorf("%s: want the worker user, got %s", where, user)
			}
			if dig(svc, "container_name") != nil || len(list(dig(svc, "ports"))) > 0 {
				t.Errorf("%s: a container name or a published port stops --scale worker=N", where)
			}
			port := httpPort(t, where, flags["http"])
			if !slices.Contains(strs(dig(svc, "expose")), strconv.Itoa(port)) {
				t.Errorf("%s: expose %v lacks the --http port %d", where, dig(svc, "expose"), port)
			}
			checkScrape(t, services, port)
			drain := parseDur(t, cmpOrStr(flags["drain-timeout"], consumer.DefaultDrainTimeout.String()))
			if g := parseDur(t, str(dig(svc, "stop_grace_period"))); g < drain+consumer.HeartbeatGrace {
				t.Errorf("%s: stop_grace_period %s < --drain-timeout %s + %s handler grace: docker would kill a draining worker", where, g, drain, consumer.HeartbeatGrace)
			}
		}
	}

	// Every ${VAR} compose reads is documented in .env.example.
	raw, _ := os.ReadFile(deployPath("compose.yaml"))
	example, err := os.ReadFile(deployPath(".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range composeVar.FindAllStringSubmatch(string(raw), -1) {
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).Match(example) {
			t.Errorf("deploy/compose.yaml reads ${%s}; add it to deploy/.env.example", m[1])
		}
	}

	// Bind mounts exist (relative to deploy/), the dashboard among them.
	for name, svc := range services {
		for _, v := range strs(dig(svc, "volumes")) {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				continue
			}
			if _, err := os.Stat(deployPath(src)); err != nil {
				t.Errorf("service %s mounts %s, which is missing under deploy/", name, src)
			}
		}
	}

	// The exporters watch one node each; Prometheus scrapes them.
	prom := readDoc(t, deployPath("prometheus/prometheus.yml"))
	var promTargets []string
	for _, job := range list(dig(prom, "scrape_configs")) {
		for _, sc := range list(dig(job, "static_configs")) {
			promTargets = append(promTargets, strs(dig(sc, "targets"))...)
		}
	}
	var watched []string
	for name, svc := range services {
		if !strings.Contains(str(dig(svc, "image")), "prometheus-nats-exporter") {
			continue
		}
		args := strs(dig(svc, "command"))
		port := "7777"
		if i := slices.Index(args, "-port"); i >= 0 && i+1 < len(args) {
			port = args[i+1]
		}
		if !slices.Contains(promTargets, name+":"+port) {
			t.Errorf("prometheus.yml does not scrape the exporter %s:%s", name, port)
		}
		u, err := url.Parse(args[len(args)-1])
		if err != nil || u.Port() != "8222" || services[u.Hostname()] == nil {
			t.Errorf("service %s: it should watch a NATS service's monitoring port 8222, got %q", name, args[len(args)-1])
		} else {
			watched = append(watched, u.Hostname())
		}
	}
	slices.Sort(watched)
	if !slices.Equal(watched, natsNodes) {
		t.Errorf("the NATS exporters watch %v; want one each of %v", watched, natsNodes)
	}

	// Grafana: the data source is the Prometheus service; the dashboard lands where the
	// provider looks.
	ds := readDoc(t, deployPath("grafana-provisioning/datasources/prometheus.yaml"))
	dsURL, _ := url.Parse(str(dig(ds, "datasources", "0", "url")))
	if dsURL == nil || services[dsURL.Hostname()] == nil || dsURL.Port() != "9090" {
		t.Errorf("grafana data source url %v is not the prometheus service on 9090", dig(ds, "datasources", "0", "url"))
	}
	provider := readDoc(t, deployPath("grafana-provisioning/dashboards/jetflow.yaml"))
	dir := str(dig(provider, "providers", "0", "options", "path"))
	mounted := false
	for _, v := range strs(dig(services["grafana"], "volumes")) {
		src, dst, _ := strings.Cut(v, ":")
		dst, _, _ = strings.Cut(dst, ":")
		if src == "./grafana/jetflow.json" && filepath.Dir(dst) == dir {
			mounted = true
		}
		if src == "./grafana-provisioning" && dst != "/etc/grafana/provisioning" {
			t.Errorf("grafana: ./grafana-provisioning must be mounted at /etc/grafana/provisioning, not %s", dst)
		}
	}
	if !mounted {
		t.Errorf("grafana: ./grafana/jetflow.json is not mounted in the provider's path %s", dir)
	}
	dsUID := str(dig(ds, "datasources", "0", "uid"))
	if b, err := os.ReadFile(deployPath("grafana/jetflow.json")); err == nil {
		var dash any
		if json.Unmarshal(b, &dash) == nil {
			for _, uid := range datasourceUIDs(dash) {
				if uid != dsUID && !strings.HasPrefix(uid, "$") && uid != "-- Grafana --" && uid != "grafana" {
					t.Errorf("deploy/grafana/jetflow.json uses data source uid %q; the provisioned one is %q", uid, dsUID)
				}
			}
		}
	}
}

// datasourceUIDs returns the uid of every "datasource": {"uid": …} in a dashboard.
func datasourceUIDs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if ds, ok := c.(map[string]any); k == "datasource" && ok {
				if uid, ok := ds["uid"].(string); ok {
					out = append(out, uid)
				}
			}
			out = append(out, datasourceUIDs(c)...)
		}
	case []any:
		for _, c := range x {
			out = append(out, datasourceUIDs(c)...)
		}
	}
	return out
}

// checkScrape checks that prometheus.yml finds the workers by DNS on their --http port.
func checkScrape(t *testing.T, services obj, port int) {
	t.Helper()
	prom := readDoc(t, deployPath("prometheus/prometheus.yml"))
	for _, job := range list(dig(prom, "scrape_configs")) {
		for _, sd := range list(dig(job, "dns_sd_configs")) {
			names := strs(dig(sd, "names"))
			if slices.Contains(names, "worker") && services["worker"] != nil {
				if num(dig(sd, "port")) != port {
					t.Errorf("prometheus.yml: job %v scrapes the workers on %v; their --http port is %d", dig(job, "job_name"), dig(sd, "port"), port)
				}
				if p := str(dig(job, "metrics_path")); p != "" && p != "/metrics" {
					t.Errorf("prometheus.yml: job %v: metrics_path %s; the workers serve /metrics", dig(job, "job_name"), p)
				}
				return
			}
		}
	}
	t.Error("prometheus.yml: no dns_sd_configs job scrapes the service `worker`")
}

// httpPort returns the port of an --http address.
func httpPort(t *testing.T, where, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		t.Errorf("%s: --http %q is not host:port", where, addr)
		return -1
	}
	return p
}

func parseDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("duration %q: %v", s, err)
	}
	return d
}

func cmpOrStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// k8sObjects reads every manifest under deploy/k8s/ but the Helm values and kustomization.
func k8sObjects(t *testing.T) (map[string][]obj, []string) {
	t.Helper()
	files, err := filepath.Glob(deployPath("k8s/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]obj{}
	var manifests []string
	for _, f := range files {
		switch filepath.Base(f) {
		case "kustomization.yaml", "nats-values.yaml":
			continue
		}
		manifests = append(manifests, filepath.Base(f))
		for _, d := range readDocs(t, f) {
			if d["apiVersion"] == nil || d["kind"] == nil || dig(d, "metadata", "name") == nil {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			byKind[str(d["kind"])] = append(byKind[str(d["kind"])], d)
		}
	}
	return byKind, manifests
}

// envValue returns the value (or the secret reference, as secret/key) of a container's env var.
func envValue(c any, name string) string {
	for _, e := range list(dig(c, "env")) {
		if str(dig(e, "name")) != name {
			continue
		}
		if ref := dig(e, "valueFrom", "secretKeyRef"); ref != nil {
			return "secret:" + str(dig(ref, "name")) + "/" + str(dig(ref, "key"))
		}
		return str(dig(e, "value"))
	}
	return ""
}

// TestDeployKubernetes checks deploy/k8s against the CLI, the consumer names, the NATS Helm
// values and accounts.conf.
func TestDeployKubernetes(t *testing.T) {
	t.Parallel()
	objs, manifests := k8sObjects(t)
	n := workflow.MustNames(workflow.DefaultPrefix)
	accounts := natsAccounts(t)

	kust := readDoc(t, deployPath("k8s/kustomization.yaml"))
	res := strs(dig(kust, "resources"))
	slices.Sort(res)
	slices.Sort(manifests)
	if !slices.Equal(res, manifests) {
		t.Errorf("kustomization.yaml resources %v; want every manifest in deploy/k8s: %v", res, manifests)
	}

	values := readDoc(t, deployPath("k8s/nats-values.yaml"))
	monitorPort := num(dig(values, "config", "monitor", "port"))
	for path, want := range map[string]any{
		"config.cluster.enabled":                 true,
		"config.cluster.replicas":                "3",
		"config.jetstream.enabled":               true,
		"config.jetstream.fileStore.enabled":     true,
		"config.jetstream.fileStore.pvc.enabled": true,
		"config.monitor.enabled":                 true,
		"service.ports.monitor.enabled":          true,
		"config.merge.$include":                  "accounts.conf",
	} {
		got := dig(values, strings.Split(path, ".")...)
		if str(got) != str(want) {
			t.Errorf("nats-values.yaml: %s = %v, want %v", path, got, want)
		}
	}
	if monitorPort != 8222 {
		t.Errorf("nats-values.yaml: config.monitor.port = %d, want 8222", monitorPort)
	}
	accountsConf, _ := os.ReadFile(deployPath("nats/accounts.conf"))
	if got := str(dig(values, "configMap", "merge", "data", "accounts.conf")); got != string(accountsConf) {
		t.Error("nats-values.yaml: configMap.merge.data[accounts.conf] differs from deploy/nats/accounts.conf: copy the file into it again")
	}
	for _, pw := range passwordRef.FindAllStringSubmatch(string(accountsConf), -1) {
		if dig(values, "container", "env", pw[1], "valueFrom", "secretKeyRef") == nil {
			t.Errorf("nats-values.yaml: container.env lacks %s (accounts.conf reads it)", pw[1])
		}
	}
	if v := dig(values, "config", "merge", "sync_interval"); v != nil {
		t.Errorf("nats-values.yaml sets sync_interval %v; deploy/README.md says the files keep the server default", v)
	}

	// Workers: one Deployment per built-in type, alike but for the type.
	type worker struct {
		typ         string
		concurrency int
		podLabels   obj
		httpPort    int
	}
	workers := map[string]worker{}
	var normalized []string
	for _, d := range objs["Deployment"] {
		name := str(dig(d, "metadata", "name"))
		where := "deploy/k8s Deployment " + name
		spec := dig(d, "spec", "template", "spec")
		c := dig(spec, "containers", "0")
		args := strs(dig(c, "args"))
		flags := cliArgs(t, where, args)
		if len(args) == 0 || args[0] != "worker" {
			t.Errorf("%s: want `jetflow worker`, got %v", where, args)
			continue
		}
		typ := flags["types"]
		if !slices.Contains(workflow.BuiltinTypes(), typ) {
			t.Errorf("%s: --types %q is not one built-in type", where, typ)
		}
		if name != "jetflow-worker-"+typ || str(dig(d, "metadata", "labels", "jetflow.dev/node-type")) != typ {
			t.Errorf("%s: name or node-type label does not match --types %s", where, typ)
		}
		port := httpPort(t, where, flags["http"])
		portByName := map[string]int{}
		for _, p := range list(dig(c, "ports")) {
			portByName[str(dig(p, "name"))] = num(dig(p, "containerPort"))
		}
		probePort := func(probe string) int {
			p := dig(c, probe, "httpGet", "port")
			if num(p) > 0 {
				return num(p)
			}
			return portByName[str(p)]
		}
		for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			if got := str(dig(c, probe, "httpGet", "path")); got != path {
				t.Errorf("%s: %s path %q, want %s", where, probe, got, path)
			}
			if probePort(probe) != port {
				t.Errorf("%s: %s port %v is not the --http port %d", where, probe, dig(c, probe, "httpGet", "port"), port)
			}
		}
		drain := parseDur(t, cmpOrStr(flags["drain-timeout"], consumer.DefaultDrainTimeout.String()))
		preStop := time.Duration(num(dig(c, "lifecycle", "preStop", "sleep", "seconds"))) * time.Second
		if preStop <= 0 {
			t.Errorf("%s: want a preStop sleep", where)
		}
		grace := time.Duration(num(dig(spec, "terminationGracePeriodSeconds"))) * time.Second
		if grace < preStop+drain+consumer.HeartbeatGrace {
			t.Errorf("%s: terminationGracePeriodSeconds %s < preStop %s + --drain-timeout %s + %s handler grace", where, grace, preStop, drain, consumer.HeartbeatGrace)
		}
		for _, r := range []string{"requests.cpu", "requests.memory", "limits.memory"} {
			if dig(c, append([]string{"resources"}, strings.Split(r, ".")...)...) == nil {
				t.Errorf("%s: no resources.%s", where, r)
			}
		}
		if dig(spec, "securityContext", "runAsNonRoot") != true && dig(c, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: want runAsNonRoot", where)
		}
		if dig(c, "securityContext", "readOnlyRootFilesystem") != true {
			t.Errorf("%s: want readOnlyRootFilesystem", where)
		}
		checkK8sNATS(t, where, c, accounts, "worker")
		if !strings.HasPrefix(flags["admin-token"], "$(") || envValue(c, strings.Trim(flags["admin-token"], "$()")) == "" {
			t.Errorf("%s: --admin-token should come from a secret through an env var, got %q", where, flags["admin-token"])
		}
		labels, _ := dig(d, "spec", "template", "metadata", "labels").(obj)
		if sel, _ := dig(d, "spec", "selector", "matchLabels").(obj); !subset(sel, labels) {
			t.Errorf("%s: selector %v does not match the pod labels %v", where, sel, labels)
		}
		workers[name] = worker{typ: typ, concurrency: num(flags["concurrency"]), podLabels: labels, httpPort: port}

		// Blank out what may differ, and compare the rest across the four.
		var norm obj
		b, _ := json.Marshal(d)
		_ = json.Unmarshal(b, &norm)
		dig(norm, "metadata").(obj)["name"] = "NAME"
		for _, labels := range []string{"metadata.labels", "spec.selector.matchLabels", "spec.template.metadata.labels"} {
			if m, ok := dig(norm, strings.Split(labels, ".")...).(obj); ok {
				m["jetflow.dev/node-type"] = "TYPE"
			}
		}
		for i, a := range list(dig(norm, "spec", "template", "spec", "containers", "0", "args")) {
			if strings.HasPrefix(str(a), "--types=") || strings.HasPrefix(str(a), "--concurrency=") {
				list(dig(norm, "spec", "template", "spec", "containers", "0", "args"))[i] = "VARIES"
			}
		}
		if typ == "llm" {
			// The llm workers also read the providers file and the API keys: drop those
			// additions, and the rest must match the other workers.
			ctr := dig(norm, "spec", "template", "spec", "containers", "0").(obj)
			ctr["args"] = slices.DeleteFunc(list(ctr["args"]), func(a any) bool { return strings.HasPrefix(str(a), "--providers=") })
			delete(ctr, "envFrom")
			notProviders := func(v any) bool { m, ok := v.(obj); return ok && m["name"] == "providers" }
			ctr["volumeMounts"] = slices.DeleteFunc(list(ctr["volumeMounts"]), notProviders)
			spec := dig(norm, "spec", "template", "spec").(obj)
			spec["volumes"] = slices.DeleteFunc(list(spec["volumes"]), notProviders)
		}
		b, _ = json.Marshal(norm)
		normalized = append(normalized, string(b))
	}
	var types []string
	for _, w := range workers {
		types = append(types, w.typ)
	}
	slices.Sort(types)
	if !slices.Equal(types, workflow.BuiltinTypes()) {
		t.Errorf("worker Deployments run types %v; want one each of the built-in types %v", types, workflow.BuiltinTypes())
	}
	for i := 1; i < len(normalized); i++ {
		if normalized[i] != normalized[0] {
			t.Errorf("the worker Deployments differ in more than their type and --concurrency:\n%s", firstDiff(normalized[0], normalized[i]))
			break
		}
	}

	// The metrics Service selects every worker pod, on the --http port.
	if len(objs["Service"]) != 1 {
		t.Fatalf("want one Service, got %d", len(objs["Service"]))
	}
	svc := objs["Service"][0]
	sel, _ := dig(svc, "spec", "selector").(obj)
	for name, w := range workers {
		if !subset(sel, w.podLabels) {
			t.Errorf("Service %v does not select the pods of %s", dig(svc, "metadata", "name"), name)
		}
		port := dig(svc, "spec", "ports", "0")
		if num(dig(port, "port")) != w.httpPort || (num(dig(port, "targetPort")) != w.httpPort && str(dig(port, "targetPort")) != "http") {
			t.Errorf("Service port %v/%v is not the --http port %d of %s", dig(port, "port"), dig(port, "targetPort"), w.httpPort, name)
		}
		if num(dig(svc, "metadata", "annotations", "prometheus.io/port")) != w.httpPort {
			t.Errorf("Service annotation prometheus.io/port %v is not the --http port %d", dig(svc, "metadata", "annotations", "prometheus.io/port"), w.httpPort)
		}
	}

	// The setup Job.
	if len(objs["Job"]) != 1 {
		t.Fatalf("want one Job, got %d", len(objs["Job"]))
	}
	job := dig(objs["Job"][0], "spec", "template", "spec", "containers", "0")
	flags := cliArgs(t, "deploy/k8s Job", strs(dig(job, "args")))
	if a := strs(dig(job, "args")); len(a) == 0 || a[0] != "setup" || flags["replicas"] != "3" {
		t.Errorf("deploy/k8s Job: want `jetflow setup --replicas=3`, got %v", a)
	}
	checkK8sNATS(t, "deploy/k8s Job", job, accounts, "operator")
	if dig(objs["Job"][0], "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("deploy/k8s Job: want runAsNonRoot")
	}

	// KEDA: one ScaledObject per worker Deployment, on its type's consumer.
	natsURL, _ := url.Parse(envValue(job, "NATS_URL"))
	svcHost, ns, _ := strings.Cut(natsURL.Hostname(), ".")
	ns, _, _ = strings.Cut(ns, ".")
	scaled := map[string]bool{}
	for _, so := range objs["ScaledObject"] {
		name := str(dig(so, "metadata", "name"))
		where := "deploy/k8s ScaledObject " + name
		target := str(dig(so, "spec", "scaleTargetRef", "name"))
		w, ok := workers[target]
		if !ok {
			t.Errorf("%s: scaleTargetRef %q is not a worker Deployment", where, target)
			continue
		}
		scaled[target] = true
		trig := dig(so, "spec", "triggers", "0")
		md := dig(trig, "metadata")
		if str(dig(trig, "type")) != "nats-jetstream" {
			t.Errorf("%s: trigger type %v, want nats-jetstream", where, dig(trig, "type"))
		}
		if got := str(dig(md, "stream")); got != n.StepsStream() {
			t.Errorf("%s: stream %q, want %s", where, got, n.StepsStream())
		}
		if got := str(dig(md, "consumer")); got != n.Consumer(w.typ) {
			t.Errorf("%s: consumer %q, want %s (the consumer of the Deployment's --types)", where, got, n.Consumer(w.typ))
		}
		if got := str(dig(md, "account")); got != natsUser(t, accounts, "worker").Account.Name {
			t.Errorf("%s: account %q is not the account of accounts.conf", where, got)
		}
		host, port, _ := net.SplitHostPort(str(dig(md, "natsServerMonitoringEndpoint")))
		if num(port) != monitorPort || !strings.HasPrefix(host, svcHost+"-headless."+ns+".") {
			t.Errorf("%s: natsServerMonitoringEndpoint %v; want %s-headless.%s.… on the monitoring port %d", where, dig(md, "natsServerMonitoringEndpoint"), svcHost, ns, monitorPort)
		}
		if lag := num(dig(md, "lagThreshold")); lag <= w.concurrency {
			t.Errorf("%s: lagThreshold %d must exceed the concurrency %d: the lag counts running steps too", where, lag, w.concurrency)
		}
		if max := num(dig(so, "spec", "maxReplicaCount")); max*w.concurrency > setup.DefaultMaxAckPending {
			t.Errorf("%s: maxReplicaCount %d × --concurrency %d > MaxAckPending %d: the extra pods would only wait", where, max, w.concurrency, setup.DefaultMaxAckPending)
		}
	}
	if !reflect.DeepEqual(scaled, boolSet(slices.Collect(maps.Keys(workers)))) {
		t.Errorf("ScaledObjects target %v; want one per worker Deployment %v", slices.Collect(maps.Keys(scaled)), slices.Collect(maps.Keys(workers)))
	}
}

// checkK8sNATS checks a container's NATS address and user.
func checkK8sNATS(t *testing.T, where string, c any, accounts *server.Options, role string) {
	t.Helper()
	for _, s := range serverList(t, where, envValue(c, "NATS_URL")) {
		if host, port, _ := net.SplitHostPort(s); port != "4222" || !strings.HasSuffix(host, ".svc.cluster.local") {
			t.Errorf("%s: NATS_URL %s: want the NATS service on 4222", where, s)
		}
	}
	if user := envValue(c, "NATS_USER"); user != role {
		t.Errorf("%s: NATS_USER %q, want %s", where, user, role)
	} else {
		natsUser(t, accounts, user)
	}
	if !strings.HasPrefix(envValue(c, "NATS_PASSWORD"), "secret:") {
		t.Errorf("%s: NATS_PASSWORD should come from a Secret", where)
	}
}

// firstDiff shows where a and b first differ.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(i-60, 0)
	return fmt.Sprintf("…%s…\n…%s…", a[from:min(i+60, len(a))], b[from:min(i+60, len(b))])
}

func subset(sel, labels obj) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

func boolSet(keys []string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// TestDeployDockerfile checks that deploy/Dockerfile builds this command, static and with the
// version stamped where main reads it, into a non-root distroless image.
func TestDeployDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(deployPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := strings.ReplaceAll(string(b), "\\\n", " ")
	build := regexp.MustCompile(`(?m)^RUN .*\bgo build (.*)$`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("deploy/Dockerfile has no `RUN … go build`")
	}
	fields := strings.Fields(build[1])
	pkg := fields[len(fields)-1]
	if pkg != "./cmd/jetflow" {
		t.Errorf("deploy/Dockerfile builds %s, want ./cmd/jetflow", pkg)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version="} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile: no %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^FROM golang:1\.26\b`).MatchString(df) {
		t.Error("deploy/Dockerfile: the build stage should be golang:1.26 (go.mod's version)")
	}
	if !regexp.MustCompile(`(?m)^FROM gcr\.io/distroless/static[^\s]*:nonroot\s*$`).MatchString(df) || !strings.Contains(df, "USER nonroot") {
		t.Error("deploy/Dockerfile: the final stage should be distroless/static:nonroot, USER nonroot")
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if _, err := os.Stat(filepath.Join("../..", f)); err != nil {
			t.Errorf("deploy/Dockerfile copies %s: %v", f, err)
		}
	}

	// The package path and the -X target are right: build the package from the repository
	// root, as the Dockerfile does, and ask the binary its version. (Without -trimpath and
	// CGO_ENABLED=0, which change nothing here, the build reuses TestMain's compiled packages.)
	bin := filepath.Join(t.TempDir(), "jetflow")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=deploy-test-1.2.3", "-o", bin, pkg)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s as deploy/Dockerfile does: %v\n%s", pkg, err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "deploy-test-1.2.3") {
		t.Errorf("%s --version = %q (%v); -X main.version did not reach the binary", bin, out, err)
	}
}

// TestDeployComposeConfig runs `docker compose config` where Docker can.
func TestDeployComposeConfig(t *testing.T) {
	t.Parallel()
	if err := exec.Command("docker", "compose", "version").Run(); err != nil {
		t.Skip("docker compose is not installed: skipping `docker compose config`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers: skipping `docker compose config`")
	}
	cmd := exec.CommandContext(ctx, "docker", "compose", "-f", deployPath("compose.yaml"), "config", "--quiet")
	cmd.Env = os.Environ()
	for _, v := range []string{"JETFLOW_PRODUCER_PASSWORD", "JETFLOW_WORKER_PASSWORD", "JETFLOW_OPERATOR_PASSWORD", "JETFLOW_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"} {
		cmd.Env = append(cmd.Env, v+"=test")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose -f deploy/compose.yaml config: %v\n%s", err, out)
	}
}
