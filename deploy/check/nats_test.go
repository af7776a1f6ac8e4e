package check

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"
)

// natsPasswords are the variables deploy/nats/accounts.conf reads from the environment.
var natsPasswords = []string{"JETFLOW_PRODUCER_PASSWORD", "JETFLOW_WORKER_PASSWORD", "JETFLOW_OPERATOR_PASSWORD"}

// setNATSPasswords sets the passwords accounts.conf reads, "pw-" and the variable's name.
func setNATSPasswords(t *testing.T) {
	t.Helper()
	for _, name := range natsPasswords {
		t.Setenv(name, "pw-"+name)
	}
}

// processNATSConfig parses a config file with nats-server's own parser, as
// `nats-server --config` does.
func processNATSConfig(t *testing.T, file string) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server refuses %s: %v", file, err)
	}
	return opts
}

// forTest changes what a test must change in parsed options and nothing else: every
// listener on 127.0.0.1 (a random port unless port says otherwise), JetStream's store in a
// temporary directory, no signal handlers.
func forTest(t *testing.T, opts *server.Options) {
	t.Helper()
	opts.Host = "127.0.0.1"
	opts.Port = -1
	if opts.HTTPPort != 0 {
		opts.HTTPHost = "127.0.0.1"
		opts.HTTPPort = -1
	}
	if opts.Cluster.Port != 0 {
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = -1
	}
	if opts.LeafNode.Port != 0 {
		opts.LeafNode.Host = "127.0.0.1"
		opts.LeafNode.Port = -1
	}
	if opts.Gateway.Port != 0 {
		opts.Gateway.Host = "127.0.0.1"
		opts.Gateway.Port = -1
	}
	if opts.Websocket.Port != 0 {
		opts.Websocket.Host = "127.0.0.1"
		opts.Websocket.Port = -1
	}
	if opts.MQTT.Port != 0 {
		opts.MQTT.Host = "127.0.0.1"
		opts.MQTT.Port = -1
	}
	if opts.JetStream {
		opts.StoreDir = t.TempDir()
	}
	opts.NoSigs = true
	opts.NoLog = true
}

// startNATS starts a server with opts and shuts it down at the end of the test.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server refuses the options: %v", err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatalf("%s: not ready for connections", s.Name())
	}
	return s
}

// freePort returns a port of 127.0.0.1 that nothing listens on now. (The routes of a
// cluster need the ports of the other nodes before they start.)
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// users is what a parsed config grants each user: account and permissions, by name.
func users(opts *server.Options) map[string]string {
	out := map[string]string{}
	for _, u := range opts.Users {
		account := ""
		if u.Account != nil {
			account = u.Account.Name
		}
		out[u.Username] = fmt.Sprintf("account=%s password=%s permissions=%s", account, u.Password, permissionsString(u.Permissions))
	}
	return out
}

// permissionsString prints permissions by value, for comparing two parsed configs.
func permissionsString(p *server.Permissions) string {
	if p == nil {
		return "none"
	}
	sub := func(s *server.SubjectPermission) string {
		if s == nil {
			return "{}"
		}
		return fmt.Sprintf("{allow:%q deny:%q}", s.Allow, s.Deny)
	}
	response := "none"
	if p.Response != nil {
		response = fmt.Sprintf("%+v", *p.Response)
	}
	return fmt.Sprintf("publish:%s subscribe:%s response:%s", sub(p.Publish), sub(p.Subscribe), response)
}

// checkJetflowAccount checks what accounts.conf must define, whoever includes it.
func checkJetflowAccount(t *testing.T, opts *server.Options) {
	t.Helper()
	if !slices.ContainsFunc(opts.Accounts, func(a *server.Account) bool { return a.Name == "JETFLOW" }) {
		t.Fatal("no account JETFLOW")
	}
	got := users(opts)
	var names []string
	for name := range got {
		names = append(names, name)
	}
	sort.Strings(names)
	if want := []string{"operator", "producer", "worker"}; !slices.Equal(names, want) {
		t.Fatalf("users %v, want %v", names, want)
	}
	for _, u := range opts.Users {
		if u.Account == nil || u.Account.Name != "JETFLOW" {
			t.Errorf("user %s is not in account JETFLOW", u.Username)
		}
		if want := "pw-JETFLOW_" + strings.ToUpper(u.Username) + "_PASSWORD"; u.Password != want {
			t.Errorf("user %s: password %q, want the environment's %q", u.Username, u.Password, want)
		}
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
			t.Errorf("user %s has no publish and subscribe permissions", u.Username)
		}
	}
}

// checkJetflowJetStream checks that a running server has JetStream on for account JETFLOW
// (`jetstream: enabled` in accounts.conf).
func checkJetflowJetStream(t *testing.T, s *server.Server) {
	t.Helper()
	if !s.JetStreamEnabled() {
		t.Fatalf("%s: JetStream is off", s.Name())
	}
	acc, err := s.LookupAccount("JETFLOW")
	if err != nil {
		t.Fatal(err)
	}
	if !acc.JetStreamEnabled() {
		t.Fatalf("%s: account JETFLOW has no JetStream", s.Name())
	}
}

// TestNATSConfigRequiresPasswords checks what accounts.conf says: the server refuses the
// config when a password is missing from its environment.
func TestNATSConfigRequiresPasswords(t *testing.T) {
	for _, missing := range natsPasswords {
		t.Run(missing, func(t *testing.T) {
			setNATSPasswords(t)
			os.Unsetenv(missing) // t.Setenv restores it
			_, err := server.ProcessConfigFile(deployPath("nats", "nats.conf"))
			if err == nil || !strings.Contains(err.Error(), missing) {
				t.Fatalf("want an error naming %s, got %v", missing, err)
			}
		})
	}
}

// TestNATSComposeCluster parses deploy/nats/nats.conf (which includes accounts.conf) once
// a node, as the three compose services do (`--config nats.conf --name nats-N`), and starts
// the three as a cluster. Only listen addresses, the store directory and the route host
// names (nats-N, resolved by compose's DNS) change: every route is kept, pointing at the
// node of the same name on 127.0.0.1, the own one included, as in the file.
func TestNATSComposeCluster(t *testing.T) {
	setNATSPasswords(t)
	names := []string{"nats-1", "nats-2", "nats-3"}
	// The cluster ports are picked free and let go before the nodes listen on them, so one
	// may be taken meanwhile (by another test's server): the cluster is started again on
	// fresh ports, a few times, before the test gives up.
	var servers []*server.Server
	for attempt := 1; ; attempt++ {
		var ok bool
		if servers, ok = startComposeCluster(t, names); ok {
			break
		}
		if attempt == 3 {
			t.Fatal("the three nodes did not all become ready for connections on fresh ports, 3 times")
		}
		t.Logf("attempt %d: a node was not ready (a cluster port taken meanwhile?); trying fresh ports", attempt)
	}
	checkComposeCluster(t, servers)
}

// startComposeCluster starts the compose cluster's three nodes from deploy/nats/nats.conf,
// after checking the settings compose relies on, on fresh cluster ports; false (and every
// node it started shut down) when a node is not ready for connections.
func startComposeCluster(t *testing.T, names []string) ([]*server.Server, bool) {
	ports := map[string]int{}
	for _, name := range names {
		ports[name] = freePort(t)
	}
	var servers []*server.Server
	for _, name := range names {
		opts := processNATSConfig(t, deployPath("nats", "nats.conf"))
		if opts.Port != 4222 || opts.HTTPPort != 8222 || opts.Cluster.Port != 6222 {
			t.Fatalf("ports client %d, monitoring %d, cluster %d: want 4222, 8222, 6222 (compose and the exporters use them)",
				opts.Port, opts.HTTPPort, opts.Cluster.Port)
		}
		if opts.Cluster.Name != "jetflow" || !opts.Cluster.NoAdvertise {
			t.Errorf("cluster %q no_advertise=%v, want jetflow and true", opts.Cluster.Name, opts.Cluster.NoAdvertise)
		}
		if !opts.JetStream || opts.StoreDir != "/data" {
			t.Errorf("jetstream=%v store_dir=%q, want JetStream in /data (the compose volume)", opts.JetStream, opts.StoreDir)
		}
		if opts.MaxPayload != 8<<20 {
			t.Errorf("max_payload %d, want 8 MiB", opts.MaxPayload)
		}
		checkJetflowAccount(t, opts)
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Host)
		}
		if !slices.Equal(routes, []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}) {
			t.Fatalf("routes %v, want the three compose nodes on 6222", routes)
		}

		forTest(t, opts)
		opts.ServerName = name // --name
		opts.Cluster.Port = ports[name]
		for i, r := range opts.Routes {
			u := *r
			u.Host = fmt.Sprintf("127.0.0.1:%d", ports[r.Hostname()])
			opts.Routes[i] = &u
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats-server refuses the options: %v", err)
		}
		s.Start()
		servers = append(servers, s)
		if !s.ReadyForConnections(20 * time.Second) {
			for _, s := range servers {
				s.Shutdown()
				s.WaitForShutdown()
			}
			return nil, false
		}
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	return servers, true
}

// checkComposeCluster checks the running compose cluster as compose and the workers see it.
func checkComposeCluster(t *testing.T, servers []*server.Server) {
	// Healthy as compose's health check sees it: /healthz answers 200 once the node has a
	// JetStream meta leader and is current.
	for _, s := range servers {
		waitHealthy(t, s)
		checkJetflowJetStream(t, s)
		if got := s.NumRoutes(); got < 2 {
			t.Errorf("%s has %d routes, want one to each other node", s.Name(), got)
		}
	}

	// The users of accounts.conf log in with the passwords of the environment, and a wrong
	// password is refused.
	url := servers[0].ClientURL()
	for _, user := range []string{"producer", "worker", "operator"} {
		nc, err := nats.Connect(url, nats.UserInfo(user, "pw-JETFLOW_"+strings.ToUpper(user)+"_PASSWORD"))
		if err != nil {
			t.Fatalf("%s cannot connect: %v", user, err)
		}
		nc.Close()
	}
	if nc, err := nats.Connect(url, nats.UserInfo("worker", "wrong")); err == nil {
		nc.Close()
		t.Fatal("a wrong password is accepted")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: want an authorization error, got %v", err)
	}

	// The cluster holds a stream of three replicas on file storage, as `jetflow setup
	// --replicas 3` creates them.
	nc, err := nats.Connect(url, nats.UserInfo("operator", "pw-JETFLOW_OPERATOR_PASSWORD"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CHECK", Subjects: []string{"check.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	})
	if err != nil {
		t.Fatalf("an R3 stream: %v", err)
	}
	if _, err := js.Publish(ctx, "check.a", []byte("x")); err != nil {
		t.Fatalf("publish to the R3 stream: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.State.Msgs != 1 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream info %+v, want 3 replicas (a leader and 2 others) holding 1 message", info)
	}
}

// waitHealthy polls a server's /healthz until it answers 200, for at most a minute.
func waitHealthy(t *testing.T, s *server.Server) {
	t.Helper()
	addr := s.MonitorAddr()
	if addr == nil {
		t.Fatalf("%s has no monitoring listener", s.Name())
	}
	client := &http.Client{Timeout: 5 * time.Second}
	endpoint := (&url.URL{Scheme: "http", Host: addr.String(), Path: "/healthz"}).String()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(endpoint)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: /healthz never answered 200 (last: %s)", s.Name(), last)
}

// natsValues is the part of deploy/k8s/nats-values.yaml, the NATS Helm chart's values,
// that goes into the server config.
type natsValues struct {
	Config struct {
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	ConfigMap struct {
		Merge struct {
			Data map[string]string `json:"data"`
		} `json:"merge"`
	} `json:"configMap"`
	Container struct {
		Env map[string]any `json:"env"`
	} `json:"container"`
}

func readNATSValues(t *testing.T) natsValues {
	t.Helper()
	var v natsValues
	if err := yaml.Unmarshal(readDeploy(t, "k8s", "nats-values.yaml"), &v); err != nil {
		t.Fatalf("deploy/k8s/nats-values.yaml: %v", err)
	}
	return v
}

// renderMerge writes config.merge of the chart's values as the chart does into nats.conf:
// `$include: f` as `include f`, a string "<< v >>" as the raw v, anything else as JSON
// (which the NATS config language reads).
func renderMerge(t *testing.T, merge map[string]any) string {
	t.Helper()
	var keys []string
	for k := range merge {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := merge[k]
		switch s, isString := v.(string); {
		case k == "$include" && isString:
			fmt.Fprintf(&b, "include %q\n", s)
		case isString && strings.HasPrefix(s, "<<") && strings.HasSuffix(s, ">>"):
			fmt.Fprintf(&b, "%s: %s\n", k, strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "<<"), ">>")))
		default:
			j, err := yaml.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			asJSON, err := yaml.YAMLToJSON(j)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s: %s\n", k, asJSON)
		}
	}
	return b.String()
}

// TestNATSHelmValuesAccounts parses the accounts.conf that deploy/k8s/nats-values.yaml
// puts in the chart's ConfigMap, with the chart's config.merge (max_payload and the
// include), by nats-server's parser; checks it grants every user exactly what
// deploy/nats/accounts.conf does; and starts a server with it.
func TestNATSHelmValuesAccounts(t *testing.T) {
	setNATSPasswords(t)
	values := readNATSValues(t)
	accounts, ok := values.ConfigMap.Merge.Data["accounts.conf"]
	if !ok || strings.TrimSpace(accounts) == "" {
		t.Fatal("nats-values.yaml: no configMap.merge.data accounts.conf")
	}
	if inc, _ := values.Config.Merge["$include"].(string); inc != "accounts.conf" {
		t.Fatalf("nats-values.yaml: config.merge.$include is %q, want accounts.conf", inc)
	}
	for _, name := range natsPasswords {
		if _, ok := values.Container.Env[name]; !ok {
			t.Errorf("nats-values.yaml: container.env lacks %s, which accounts.conf reads", name)
		}
	}
	if !values.Config.Monitor.Enabled || values.Config.Monitor.Port != 8222 {
		t.Errorf("nats-values.yaml: monitor enabled=%v port=%d, want true and 8222 (KEDA's endpoint)", values.Config.Monitor.Enabled, values.Config.Monitor.Port)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := "port: 4222\njetstream { store_dir: " + fmt.Sprintf("%q", filepath.Join(dir, "js")) + " }\n" + renderMerge(t, values.Config.Merge)
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := processNATSConfig(t, file)
	if opts.MaxPayload != 8<<20 {
		t.Errorf("max_payload %d, want 8 MiB", opts.MaxPayload)
	}
	checkJetflowAccount(t, opts)
	compose := processNATSConfig(t, deployPath("nats", "nats.conf"))
	got, want := users(opts), users(compose)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the Helm values grant\n%v\nbut deploy/nats/accounts.conf grants\n%v", got, want)
	}

	forTest(t, opts)
	s := startNATS(t, opts)
	checkJetflowJetStream(t, s)
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("producer", "pw-JETFLOW_PRODUCER_PASSWORD"))
	if err != nil {
		t.Fatalf("producer cannot connect: %v", err)
	}
	nc.Close()
}

// TestNATSLameDuckFitsCompose checks the comment in compose.yaml against nats.conf: the
// nats services' stop_grace_period outlasts the lame-duck mode, so docker does not kill a
// node while it hands its clients over.
func TestNATSLameDuckFitsCompose(t *testing.T) {
	setNATSPasswords(t)
	opts := processNATSConfig(t, deployPath("nats", "nats.conf"))
	if opts.LameDuckDuration <= 0 {
		t.Fatal("nats.conf sets no lame_duck_duration")
	}
	project, err := loadCompose(t, deployPath("compose.yaml"), composeEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s, err := project.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		if s.StopGracePeriod == nil {
			t.Errorf("%s: no stop_grace_period (docker's default is 10 s)", name)
			continue
		}
		if grace, lameDuck := time.Duration(*s.StopGracePeriod), opts.LameDuckDuration+opts.LameDuckGracePeriod; grace <= lameDuck {
			t.Errorf("%s: stop_grace_period %v, not longer than lame duck %v", name, grace, lameDuck)
		}
	}
}
