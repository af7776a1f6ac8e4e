package check

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	appsv1 "k8s.io/api/apps/v1"
)

// natsJetStreamMetadata declares the trigger parameters of KEDA's nats-jetstream scaler
// (names, where KEDA looks them up, required or optional, defaults) in the form KEDA's
// typed-config parser reads, as the scaler itself declares them in
// github.com/kedacore/keda/v2/pkg/scalers/nats_jetstream_scaler.go at the version in go.mod
// (re-check it when that version changes). Importing the scaler's package would link every
// scaler KEDA has, so the test parses the metadata with the same KEDA parser
// (scalersconfig.TypedConfig) into this declaration instead.
type natsJetStreamMetadata struct {
	Account                string `keda:"name=account, order=authParams;triggerMetadata, optional"`
	AccountID              string `keda:"name=accountID, order=authParams;triggerMetadata, optional"`
	Stream                 string `keda:"name=stream, order=triggerMetadata"`
	Consumer               string `keda:"name=consumer, order=triggerMetadata"`
	LagThreshold           int64  `keda:"name=lagThreshold, order=triggerMetadata, default=10"`
	ActivationLagThreshold int64  `keda:"name=activationLagThreshold, order=triggerMetadata, default=0"`
	UseHTTPS               bool   `keda:"name=useHttps, optional, order=triggerMetadata, default=false"`
	NatsServerEndpoint     string `keda:"name=natsServerMonitoringEndpoint, order=authParams;triggerMetadata"`

	triggerIndex int //nolint:unused // KEDA's TypedConfig requires the field and sets it by name
}

// natsJetStreamKeys are the metadata keys the scaler reads (the names in the tags above).
var natsJetStreamKeys = []string{
	"account", "accountID", "activationLagThreshold", "consumer", "lagThreshold",
	"natsServerMonitoringEndpoint", "stream", "useHttps",
}

// natsJetStreamRequired are the keys jetflow's triggers must set: what the scaler cannot do
// without (endpoint, account, stream, consumer) and the threshold, whose default of 10
// would ignore the Deployment's concurrency.
var natsJetStreamRequired = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}

// parseNATSJetStreamTrigger parses trigger metadata as the scaler does
// (parseNATSJetStreamMetadata): KEDA's typed-config parser, then an account or an account
// ID. Keys the scaler does not read are refused too (KEDA only logs them).
func parseNATSJetStreamTrigger(metadata map[string]string, index int) (natsJetStreamMetadata, error) {
	var meta natsJetStreamMetadata
	config := scalersconfig.ScalerConfig{
		TriggerType:     "nats-jetstream",
		TriggerMetadata: metadata,
		TriggerIndex:    index,
		AuthParams:      map[string]string{},
		ResolvedEnv:     map[string]string{},
	}
	if err := config.TypedConfig(&meta); err != nil {
		return meta, err
	}
	if meta.Account == "" && meta.AccountID == "" {
		return meta, errors.New("no account name or id given")
	}
	for key := range metadata {
		if !slices.Contains(natsJetStreamKeys, key) {
			return meta, fmt.Errorf("the nats-jetstream scaler has no parameter %s", key)
		}
	}
	return meta, nil
}

// TestKEDAScaledObjects decodes every ScaledObject of deploy/k8s/keda.yaml strictly into
// KEDA's type, runs KEDA's own cluster-free validations, and checks each against the
// Deployments of workers.yaml (one ScaledObject a Deployment, same node type) and its
// trigger against KEDA's nats-jetstream parser and jetflow's names.
func TestKEDAScaledObjects(t *testing.T) {
	decoder := newStrictDecoder(t)

	deployments := map[string]*appsv1.Deployment{}
	for i, doc := range yamlDocuments(t, readDeploy(t, "k8s", "workers.yaml")) {
		obj, err := decoder.decode(doc)
		if err != nil {
			t.Fatalf("workers.yaml, document %d: %v", i+1, err)
		}
		if d, ok := obj.(*appsv1.Deployment); ok {
			deployments[d.Name] = d
		}
	}
	if len(deployments) == 0 {
		t.Fatal("workers.yaml defines no Deployment")
	}
	values := readNATSValues(t)

	scaled := map[string]string{} // Deployment -> ScaledObject
	docs := yamlDocuments(t, readDeploy(t, "k8s", "keda.yaml"))
	for i, doc := range docs {
		obj, err := decoder.decode(doc)
		if err != nil {
			t.Errorf("keda.yaml, document %d: %v", i+1, err)
			continue
		}
		so, ok := obj.(*kedav1alpha1.ScaledObject)
		if !ok {
			t.Errorf("keda.yaml, document %d: a %T, want only ScaledObjects", i+1, obj)
			continue
		}
		// KEDA's own checks of its admission webhook that need no cluster.
		if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(so); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if err := kedav1alpha1.CheckFallbackValid(so); err != nil {
			t.Errorf("ScaledObject %s: %v", so.Name, err)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
			t.Errorf("ScaledObject %s: minReplicaCount %v, want at least 1 (the sweeper, breakers and schedules need a worker a type)", so.Name, so.Spec.MinReplicaCount)
		}

		ref := so.Spec.ScaleTargetRef
		if ref == nil {
			t.Errorf("ScaledObject %s: no scaleTargetRef", so.Name)
			continue
		}
		if (ref.Kind != "" && ref.Kind != "Deployment") || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
			t.Errorf("ScaledObject %s targets a %s %s, want a Deployment", so.Name, ref.APIVersion, ref.Kind)
		}
		d, ok := deployments[ref.Name]
		if !ok {
			t.Errorf("ScaledObject %s targets %q, which workers.yaml does not define", so.Name, ref.Name)
			continue
		}
		if prev, dup := scaled[ref.Name]; dup {
			t.Errorf("Deployment %s is scaled by both %s and %s: KEDA allows one ScaledObject a workload", ref.Name, prev, so.Name)
		}
		scaled[ref.Name] = so.Name
		nodeType := d.Labels["jetflow.dev/node-type"]
		if nodeType == "" || so.Labels["jetflow.dev/node-type"] != nodeType {
			t.Errorf("ScaledObject %s: node type %q, its Deployment's %q", so.Name, so.Labels["jetflow.dev/node-type"], nodeType)
		}

		if len(so.Spec.Triggers) != 1 {
			t.Errorf("ScaledObject %s: %d triggers, want one (the lag of its consumer)", so.Name, len(so.Spec.Triggers))
		}
		for ti, trigger := range so.Spec.Triggers {
			if trigger.Type != "nats-jetstream" {
				t.Errorf("ScaledObject %s, trigger %d: type %q, want nats-jetstream", so.Name, ti, trigger.Type)
				continue
			}
			for _, key := range natsJetStreamRequired {
				if strings.TrimSpace(trigger.Metadata[key]) == "" {
					t.Errorf("ScaledObject %s: trigger metadata lacks %s", so.Name, key)
				}
			}
			meta, err := parseNATSJetStreamTrigger(trigger.Metadata, ti)
			if err != nil {
				t.Errorf("ScaledObject %s: trigger metadata refused: %v", so.Name, err)
				continue
			}
			if meta.Stream != "JETFLOW_STEPS" || meta.Consumer != "jetflow-"+nodeType {
				t.Errorf("ScaledObject %s: stream %q consumer %q, want JETFLOW_STEPS and jetflow-%s", so.Name, meta.Stream, meta.Consumer, nodeType)
			}
			if meta.Account != "JETFLOW" {
				t.Errorf("ScaledObject %s: account %q, want JETFLOW (deploy/nats/accounts.conf)", so.Name, meta.Account)
			}
			if meta.LagThreshold <= 0 {
				t.Errorf("ScaledObject %s: lagThreshold %d", so.Name, meta.LagThreshold)
			}
			_, port, err := net.SplitHostPort(meta.NatsServerEndpoint)
			if err != nil {
				t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q is not host:port: %v", so.Name, meta.NatsServerEndpoint, err)
			} else if want := values.Config.Monitor.Port; port != strconv.Itoa(want) {
				t.Errorf("ScaledObject %s: monitoring port %s, the Helm values' monitor port is %d", so.Name, port, want)
			}
		}
	}
	var unscaled []string
	for name := range deployments {
		if _, ok := scaled[name]; !ok {
			unscaled = append(unscaled, name)
		}
	}
	sort.Strings(unscaled)
	if len(unscaled) > 0 {
		t.Errorf("no ScaledObject scales %v", unscaled)
	}
}

// TestKEDATriggerParserRefuses keeps parseNATSJetStreamTrigger honest: KEDA's parser
// refuses a threshold that is no number and a missing stream, and the check refuses an
// unknown key, while the same metadata spelt right passes.
func TestKEDATriggerParserRefuses(t *testing.T) {
	good := func() map[string]string {
		return map[string]string{
			"natsServerMonitoringEndpoint": "nats:8222", "account": "A", "stream": "S",
			"consumer": "C", "lagThreshold": "32",
		}
	}
	meta, err := parseNATSJetStreamTrigger(good(), 0)
	if err != nil || meta.LagThreshold != 32 || meta.UseHTTPS {
		t.Fatalf("good metadata: %+v, %v", meta, err)
	}
	for name, change := range map[string]func(map[string]string){
		"threshold no number": func(m map[string]string) { m["lagThreshold"] = "many" },
		"no stream":           func(m map[string]string) { delete(m, "stream") },
		"no endpoint":         func(m map[string]string) { delete(m, "natsServerMonitoringEndpoint") },
		"no account":          func(m map[string]string) { delete(m, "account") },
		"misspelt key":        func(m map[string]string) { m["lagTreshold"] = "5" },
		"https no bool":       func(m map[string]string) { m["useHttps"] = "perhaps" },
	} {
		m := good()
		change(m)
		if _, err := parseNATSJetStreamTrigger(m, 0); err == nil {
			t.Errorf("%s: accepted %v", name, m)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
}
