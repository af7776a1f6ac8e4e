package check

import (
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"testing"

	"sigs.k8s.io/yaml"
)

// prometheusConfig is the part of Prometheus' configuration file that
// deploy/prometheus/prometheus.yml uses; decoded strictly, a field outside it fails.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	ScrapeConfigs []struct {
		JobName      string `json:"job_name"`
		MetricsPath  string `json:"metrics_path"`
		DNSSDConfigs []struct {
			Names           []string `json:"names"`
			Type            string   `json:"type"`
			Port            int      `json:"port"`
			RefreshInterval string   `json:"refresh_interval"`
		} `json:"dns_sd_configs"`
		StaticConfigs []struct {
			Targets []string          `json:"targets"`
			Labels  map[string]string `json:"labels"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// promDuration is Prometheus' duration format (model.Duration).
var promDuration = regexp.MustCompile(`^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$`)

// TestPrometheusScrapesCompose decodes prometheus.yml strictly and checks that it scrapes
// the compose services that serve metrics, on the ports they serve them on, and that
// compose gives Prometheus this file.
func TestPrometheusScrapesCompose(t *testing.T) {
	var config prometheusConfig
	if err := yaml.UnmarshalStrict(readDeploy(t, "prometheus", "prometheus.yml"), &config); err != nil {
		t.Fatalf("deploy/prometheus/prometheus.yml: %v", err)
	}
	durations := []string{config.Global.ScrapeInterval, config.Global.EvaluationInterval}

	project, err := loadCompose(t, deployPath("compose.yaml"), composeEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	prom, err := project.GetService("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(prom.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus: command %q does not read /etc/prometheus/prometheus.yml", prom.Command)
	}
	mount := bindMount(t, prom, "/etc/prometheus/prometheus.yml")
	if !samePath(t, mount.Source, deployPath("prometheus", "prometheus.yml")) {
		t.Errorf("prometheus: /etc/prometheus/prometheus.yml is %s, want deploy/prometheus/prometheus.yml", mount.Source)
	}

	jobs := map[string]bool{}
	var scraped []string
	for _, sc := range config.ScrapeConfigs {
		if sc.JobName == "" || jobs[sc.JobName] {
			t.Errorf("job name %q empty or not unique", sc.JobName)
		}
		jobs[sc.JobName] = true
		for _, dns := range sc.DNSSDConfigs {
			durations = append(durations, dns.RefreshInterval)
			if dns.Type != "A" {
				t.Errorf("job %s: DNS type %q, want A (compose answers a service name with its replicas' addresses)", sc.JobName, dns.Type)
			}
			for _, name := range dns.Names {
				scraped = append(scraped, name)
				s, err := project.GetService(name)
				if err != nil {
					t.Errorf("job %s: %s is no compose service", sc.JobName, name)
					continue
				}
				if port := strconv.Itoa(dns.Port); !servesPort(s, port) {
					t.Errorf("job %s: compose service %s does not expose port %s", sc.JobName, name, port)
				}
			}
		}
		for _, static := range sc.StaticConfigs {
			for _, target := range static.Targets {
				host, port, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("job %s: target %q: %v", sc.JobName, target, err)
					continue
				}
				scraped = append(scraped, host)
				s, err := project.GetService(host)
				if err != nil {
					t.Errorf("job %s: target %s is no compose service", sc.JobName, target)
					continue
				}
				// The exporter takes its port as -port N.
				if !servesPort(s, port) && !containsRun(s.Command, "-port", port) {
					t.Errorf("job %s: compose service %s serves nothing on %s", sc.JobName, host, port)
				}
			}
		}
	}
	for _, d := range durations {
		if d != "" && !promDuration.MatchString(d) {
			t.Errorf("duration %q is not one Prometheus reads", d)
		}
	}
	sort.Strings(scraped)
	if want := []string{"nats-exporter-1", "nats-exporter-2", "nats-exporter-3", "worker"}; !slices.Equal(scraped, want) {
		t.Errorf("Prometheus scrapes %v, want %v", scraped, want)
	}
}
