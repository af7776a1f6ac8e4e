package check

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeServices are the services of deploy/compose.yaml.
var composeServices = []string{
	"grafana",
	"nats-1", "nats-2", "nats-3",
	"nats-exporter-1", "nats-exporter-2", "nats-exporter-3",
	"prometheus",
	"setup",
	"worker",
	"workflows",
}

// composeEnv reads deploy/.env.example, the template of the variables compose.yaml needs,
// with compose-go's own .env parser, checks it carries no value, and gives every variable
// a test value ("test-" and its name).
func composeEnv(t *testing.T) map[string]string {
	t.Helper()
	example, err := dotenv.Read(deployPath(".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	if len(example) == 0 {
		t.Fatal("deploy/.env.example defines no variable")
	}
	env := make(map[string]string, len(example))
	for name, value := range example {
		if value != "" {
			t.Errorf("deploy/.env.example sets %s: it is a template and must carry no secret", name)
		}
		env[name] = "test-" + name
	}
	return env
}

// loadCompose loads a compose file with compose-go as `docker compose` does: schema
// validation, interpolation, normalization, path resolution and the consistency check
// all on. Only env is visible to the interpolation, not the test's own environment, and
// no .env file is read.
func loadCompose(t *testing.T, file string, env map[string]string) (*types.Project, error) {
	t.Helper()
	var list []string
	for name, value := range env {
		list = append(list, name+"="+value)
	}
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithEnv(list),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
		cli.WithLoadOptions(func(o *loader.Options) {
			o.SkipValidation = false
			o.SkipInterpolation = false
			o.SkipConsistencyCheck = false
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return options.LoadProject(context.Background())
}

// TestComposeLoads loads deploy/compose.yaml with compose-go, with every variable of
// deploy/.env.example set, and checks the services, their wiring (health-checked NATS
// nodes, setup before the workers, interpolated passwords and token) and that every bind
// mount and the build context exist.
func TestComposeLoads(t *testing.T) {
	env := composeEnv(t)
	project, err := loadCompose(t, deployPath("compose.yaml"), env)
	if err != nil {
		t.Fatalf("compose-go refuses deploy/compose.yaml: %v", err)
	}
	if project.Name != "jetflow" {
		t.Errorf("project name %q, want jetflow", project.Name)
	}
	names := project.ServiceNames()
	sort.Strings(names)
	if !slices.Equal(names, composeServices) {
		t.Fatalf("services %v, want %v", names, composeServices)
	}
	volumes := project.VolumeNames()
	sort.Strings(volumes)
	if want := []string{"grafana", "nats-1", "nats-2", "nats-3", "prometheus"}; !slices.Equal(volumes, want) {
		t.Errorf("volumes %v, want %v", volumes, want)
	}

	service := func(name string) types.ServiceConfig {
		t.Helper()
		s, err := project.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	envOf := func(s types.ServiceConfig, name string) string {
		t.Helper()
		v := s.Environment[name]
		if v == nil {
			t.Errorf("service %s: no %s in its environment", s.Name, name)
			return ""
		}
		return *v
	}

	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := service(name)
		if !containsRun(s.Command, "--config", "/etc/nats/nats.conf") || !containsRun(s.Command, "--name", name) {
			t.Errorf("service %s: command %q, want --config /etc/nats/nats.conf --name %s", name, s.Command, name)
		}
		for _, v := range []string{"JETFLOW_PRODUCER_PASSWORD", "JETFLOW_WORKER_PASSWORD", "JETFLOW_OPERATOR_PASSWORD"} {
			if got := envOf(s, v); got != env[v] {
				t.Errorf("service %s: %s=%q, want the interpolated %q", name, v, got, env[v])
			}
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("service %s has no health check: setup waits for service_healthy", name)
		}
		config := bindMount(t, s, "/etc/nats")
		if !config.ReadOnly {
			t.Errorf("service %s: /etc/nats is writable", name)
		}
		for _, f := range []string{"nats.conf", "accounts.conf"} {
			if _, err := os.Stat(filepath.Join(config.Source, f)); err != nil {
				t.Errorf("service %s: the config directory lacks %s: %v", name, f, err)
			}
		}
	}

	setup := service("setup")
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		if dep, ok := setup.DependsOn[n]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("setup: depends_on %s = %+v, want condition %s", n, dep, types.ServiceConditionHealthy)
		}
	}
	if got := envOf(setup, "NATS_PASSWORD"); got != env["JETFLOW_OPERATOR_PASSWORD"] {
		t.Errorf("setup: NATS_PASSWORD=%q, want the operator's", got)
	}
	for _, name := range []string{"workflows", "worker"} {
		s := service(name)
		if dep, ok := s.DependsOn["setup"]; !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s: depends_on setup = %+v, want condition %s", name, dep, types.ServiceConditionCompletedSuccessfully)
		}
		if s.Build == nil {
			t.Errorf("%s: no build section", name)
			continue
		}
		dockerfile := s.Build.Dockerfile
		if !filepath.IsAbs(dockerfile) {
			dockerfile = filepath.Join(s.Build.Context, dockerfile)
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, "go.mod")); err != nil {
			t.Errorf("%s: build context %s is not the repository root: %v", name, s.Build.Context, err)
		}
		if _, err := os.Stat(dockerfile); err != nil {
			t.Errorf("%s: Dockerfile: %v", name, err)
		}
	}
	worker := service("worker")
	if got := envOf(worker, "NATS_USER"); got != "worker" {
		t.Errorf("worker: NATS_USER=%q, want worker", got)
	}
	if got := envOf(worker, "NATS_PASSWORD"); got != env["JETFLOW_WORKER_PASSWORD"] {
		t.Errorf("worker: NATS_PASSWORD=%q, want the worker's", got)
	}
	if !containsRun(worker.Command, "--admin-token", env["JETFLOW_ADMIN_TOKEN"]) {
		t.Errorf("worker: command %q lacks the interpolated --admin-token", worker.Command)
	}
	if !containsRun(worker.Command, "--http", "0.0.0.0:9090") || !slices.Contains(worker.Expose, "9090") {
		t.Errorf("worker: want --http 0.0.0.0:9090 and port 9090 exposed, got command %q expose %q", worker.Command, worker.Expose)
	}
	if got := envOf(service("grafana"), "GF_SECURITY_ADMIN_PASSWORD"); got != env["GRAFANA_ADMIN_PASSWORD"] {
		t.Errorf("grafana: GF_SECURITY_ADMIN_PASSWORD=%q, want the interpolated one", got)
	}

	// Every bind mount names something that exists in the repository.
	for _, name := range names {
		for _, v := range service(name).Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s: bind mount %s -> %s: %v", name, v.Source, v.Target, err)
			}
		}
	}
}

// TestComposeRequiresEveryVariable unsets each variable of deploy/.env.example in turn:
// compose-go must refuse the file and name the variable (the ${VAR:?...} form), so no
// container starts with an empty password.
func TestComposeRequiresEveryVariable(t *testing.T) {
	env := composeEnv(t)
	for name := range env {
		t.Run(name, func(t *testing.T) {
			partial := make(map[string]string, len(env))
			for k, v := range env {
				if k != name {
					partial[k] = v
				}
			}
			_, err := loadCompose(t, deployPath("compose.yaml"), partial)
			if err == nil {
				t.Fatalf("deploy/compose.yaml loads without %s", name)
			}
			if !strings.Contains(err.Error(), "required variable "+name) {
				t.Fatalf("the error does not name %s: %v", name, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestComposeSchemaValidationIsOn checks that loadCompose validates against the Compose
// schema: a misspelt service attribute is refused.
func TestComposeSchemaValidationIsOn(t *testing.T) {
	file := filepath.Join(t.TempDir(), "compose.yaml")
	bad := "services:\n  a:\n    image: busybox\n    restart_policy: always\n"
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadCompose(t, file, nil)
	if err == nil || !strings.Contains(err.Error(), "restart_policy") {
		t.Fatalf("want a schema error naming restart_policy, got %v", err)
	}
}

// containsRun reports whether args holds want as consecutive elements.
func containsRun(args []string, want ...string) bool {
	for i := 0; i+len(want) <= len(args); i++ {
		if slices.Equal(args[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// bindMount returns the bind mount of s at target, or fails the test.
func bindMount(t *testing.T, s types.ServiceConfig, target string) types.ServiceVolumeConfig {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
	return types.ServiceVolumeConfig{}
}
