package check

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// k8sNotResources are the files of deploy/k8s that are not Kubernetes resources:
// Kustomize's own file, and the values of the NATS Helm chart.
var k8sNotResources = []string{"kustomization.yaml", "nats-values.yaml"}

// k8sScheme knows the API groups a jetflow install may use, and KEDA's. A kind outside it
// fails to decode, so a manifest of a new kind has to be added here on purpose.
func k8sScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		batchv1.AddToScheme,
		policyv1.AddToScheme,
		networkingv1.AddToScheme,
		rbacv1.AddToScheme,
		autoscalingv2.AddToScheme,
		kedav1alpha1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return scheme
}

// strictDecoder is the decoder of the API server with fieldValidation=Strict: YAML,
// the Go type chosen by apiVersion and kind, and an error for any unknown or duplicate
// field (case-sensitive, unlike encoding/json).
type strictDecoder struct{ serializer *kjson.Serializer }

func newStrictDecoder(t *testing.T) strictDecoder {
	t.Helper()
	scheme := k8sScheme(t)
	return strictDecoder{kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})}
}

// decode decodes one YAML document into its typed object. Any error, strict or not,
// is returned: the object is trusted only when there is none.
func (d strictDecoder) decode(doc []byte) (runtime.Object, error) {
	obj, gvk, err := d.serializer.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	if gvk == nil || gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("no apiVersion or kind")
	}
	return obj, nil
}

// k8sObject is a decoded manifest and where it came from.
type k8sObject struct {
	file string
	obj  runtime.Object
}

func (o k8sObject) kindName() string {
	accessor, err := meta.Accessor(o.obj)
	if err != nil {
		return fmt.Sprintf("%T", o.obj)
	}
	return o.obj.GetObjectKind().GroupVersionKind().Kind + "/" + accessor.GetName()
}

// k8sResourceFiles lists the resource files of deploy/k8s (every *.yaml but
// k8sNotResources).
func k8sResourceFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(deployPath("k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if name := filepath.Base(f); !slices.Contains(k8sNotResources, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// decodeK8sFiles decodes every document of every resource file of deploy/k8s strictly.
func decodeK8sFiles(t *testing.T) []k8sObject {
	t.Helper()
	decoder := newStrictDecoder(t)
	var objects []k8sObject
	for _, name := range k8sResourceFiles(t) {
		docs := yamlDocuments(t, readDeploy(t, "k8s", name))
		if len(docs) == 0 {
			t.Errorf("deploy/k8s/%s holds no document", name)
		}
		for i, doc := range docs {
			obj, err := decoder.decode(doc)
			if err != nil {
				t.Errorf("deploy/k8s/%s, document %d: %v", name, i+1, err)
				continue
			}
			objects = append(objects, k8sObject{file: name, obj: obj})
		}
	}
	return objects
}

// k8sWant is what deploy/k8s defines, by file.
var k8sWant = map[string][]string{
	"namespace.yaml": {"Namespace/jetflow"},
	"service.yaml":   {"Service/jetflow-worker-metrics"},
	"setup-job.yaml": {"Job/jetflow-setup"},
	"workers.yaml": {
		"Deployment/jetflow-worker-exec", "Deployment/jetflow-worker-http", "Deployment/jetflow-worker-llm",
		"Deployment/jetflow-worker-noop", "Deployment/jetflow-worker-service", "Deployment/jetflow-worker-sleep", "Deployment/jetflow-worker-wait", "Deployment/jetflow-worker-workflow",
	},
	"keda.yaml": {
		"ScaledObject/jetflow-worker-exec", "ScaledObject/jetflow-worker-http", "ScaledObject/jetflow-worker-llm",
		"ScaledObject/jetflow-worker-noop", "ScaledObject/jetflow-worker-service", "ScaledObject/jetflow-worker-sleep", "ScaledObject/jetflow-worker-wait", "ScaledObject/jetflow-worker-workflow",
	},
}

// TestK8sManifestsDecodeStrictly decodes every document of deploy/k8s strictly into its
// Kubernetes or KEDA type, checks the inventory against k8sWant, and checks what the API
// server or the pods need: Deployment selectors select their templates, a Job restarts
// OnFailure or Never, probes and the Service target ports the containers name, mounts
// name defined volumes, and the metrics Service selects every worker.
func TestK8sManifestsDecodeStrictly(t *testing.T) {
	objects := decodeK8sFiles(t)
	got := map[string][]string{}
	for _, o := range objects {
		got[o.file] = append(got[o.file], o.kindName())
	}
	for file, want := range k8sWant {
		if !slices.Equal(got[file], want) {
			t.Errorf("deploy/k8s/%s defines %v, want %v", file, got[file], want)
		}
	}
	for file := range got {
		if _, ok := k8sWant[file]; !ok {
			t.Errorf("deploy/k8s/%s is not expected here: add it to k8sWant", file)
		}
	}

	var service *corev1.Service
	var pods []k8sObject
	for _, o := range objects {
		switch obj := o.obj.(type) {
		case *corev1.Service:
			service = obj
		case *appsv1.Deployment:
			checkPodSelector(t, o.kindName(), obj.Spec.Selector, obj.Spec.Template.Labels)
			checkPodTemplate(t, o.kindName(), obj.Spec.Template.Spec)
			pods = append(pods, o)
		case *batchv1.Job:
			checkPodTemplate(t, o.kindName(), obj.Spec.Template.Spec)
			if p := obj.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
				t.Errorf("%s: restartPolicy %q: a Job allows only OnFailure or Never", o.kindName(), p)
			}
		}
	}
	if service == nil {
		t.Fatal("no Service")
	}
	// The metrics Service selects every worker pod, on a port the pods name.
	selector := labels.SelectorFromSet(service.Spec.Selector)
	for _, o := range pods {
		d := o.obj.(*appsv1.Deployment)
		if !selector.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s does not select the pods of %s", service.Name, o.kindName())
		}
		for _, port := range service.Spec.Ports {
			if port.TargetPort.Type == intstr.String && !hasContainerPort(d.Spec.Template.Spec, port.TargetPort.StrVal) {
				t.Errorf("Service %s targets port %q that %s does not name", service.Name, port.TargetPort.StrVal, o.kindName())
			}
		}
	}
}

// checkPodSelector checks what the API server requires of a Deployment: a selector that
// selects its own template.
func checkPodSelector(t *testing.T, what string, selector *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || s.Empty() {
		t.Errorf("%s: selector %v: %v", what, selector, err)
		return
	}
	if !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not match the template labels %v", what, selector, podLabels)
	}
}

// checkPodTemplate checks that every probe port a container names is a port it declares,
// and every volume it mounts is defined.
func checkPodTemplate(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	if len(spec.Containers) == 0 {
		t.Errorf("%s: no container", what)
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, c := range spec.Containers {
		if c.Image == "" {
			t.Errorf("%s: container %s has no image", what, c.Name)
		}
		for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.Type != intstr.String {
				continue
			}
			if !hasContainerPort(corev1.PodSpec{Containers: []corev1.Container{c}}, probe.HTTPGet.Port.StrVal) {
				t.Errorf("%s: container %s probes port %q it does not declare", what, c.Name, probe.HTTPGet.Port.StrVal)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s: container %s mounts undefined volume %q", what, c.Name, m.Name)
			}
		}
	}
}

func hasContainerPort(spec corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// TestK8sStrictDecoderRefuses keeps the decoder honest: a misspelt field, a field of the
// wrong case, a duplicate field and an unknown kind are all refused, and the same
// manifest spelt right is accepted.
func TestK8sStrictDecoderRefuses(t *testing.T) {
	decoder := newStrictDecoder(t)
	deployment := func(field string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  " + field + ": 2\n" +
			"  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n" +
			"    spec:\n      containers:\n        - name: c\n          image: i\n"
	}
	obj, err := decoder.decode([]byte(deployment("replicas")))
	if err != nil {
		t.Fatalf("a valid Deployment is refused: %v", err)
	}
	if d, ok := obj.(*appsv1.Deployment); !ok || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Fatalf("decoded %#v, want a Deployment of 2 replicas", obj)
	}
	for _, c := range []struct{ name, doc string }{
		{"misspelt field", deployment("replica")},
		{"wrong case", deployment("Replicas")},
		{"duplicate field", strings.Replace(deployment("replicas"), "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", 1)},
		{"unknown kind", "apiVersion: apps/v1\nkind: Deploymant\nmetadata:\n  name: x\n"},
		{"unknown group", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n"},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: x\n"},
		{"misspelt KEDA field", "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: x\nspec:\n  scaleTargetRef: {name: x}\n  minReplicas: 1\n  triggers: []\n"},
	} {
		name, doc := c.name, c.doc
		_, err := decoder.decode([]byte(doc))
		if err == nil {
			t.Errorf("%s: accepted:\n%s", name, doc)
			continue
		}
		t.Logf("%s: refused: %v", name, err)
	}
}

// readKustomization decodes deploy/k8s/kustomization.yaml strictly into kustomize's own
// Kustomization type.
func readKustomization(t *testing.T) kusttypes.Kustomization {
	t.Helper()
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(readDeploy(t, "k8s", "kustomization.yaml"), &k); err != nil {
		t.Fatalf("deploy/k8s/kustomization.yaml: %v", err)
	}
	return k
}

// TestKustomization decodes deploy/k8s/kustomization.yaml strictly into kustomize's type,
// checks it lists every resource file of deploy/k8s, builds it with kustomize's engine
// (krusty, as `kubectl apply -k`), and decodes the result strictly: every object in the
// namespace, every container on the image of the images entry.
func TestKustomization(t *testing.T) {
	k := readKustomization(t)
	if k.Kind != kusttypes.KustomizationKind || k.APIVersion != kusttypes.KustomizationVersion {
		t.Errorf("kustomization is %s %s, want %s %s", k.APIVersion, k.Kind, kusttypes.KustomizationVersion, kusttypes.KustomizationKind)
	}
	if k.Namespace != "jetflow" {
		t.Errorf("namespace %q, want jetflow", k.Namespace)
	}
	// Every resource file of deploy/k8s is listed, and only those.
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if files := k8sResourceFiles(t); !slices.Equal(listed, files) {
		t.Errorf("kustomization lists %v, deploy/k8s has the resource files %v", listed, files)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(deployPath("k8s", r)); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}
	if len(k.Images) != 1 {
		t.Fatalf("images %+v, want one entry (the jetflow image)", k.Images)
	}
	image := k.Images[0]

	// Build it with kustomize's own engine (what `kubectl apply -k` runs) and decode every
	// resource of the result strictly.
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), deployPath("k8s"))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	decoder := newStrictDecoder(t)
	wantImage := image.NewName + ":" + image.NewTag
	var built []string
	for _, r := range resources.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decoder.decode(doc)
		if err != nil {
			t.Errorf("kustomize output %s: %v", r.CurId(), err)
			continue
		}
		o := k8sObject{file: "build", obj: obj}
		built = append(built, o.kindName())
		accessor, err := meta.Accessor(obj)
		if err != nil {
			t.Fatal(err)
		}
		if _, isNamespace := obj.(*corev1.Namespace); !isNamespace && accessor.GetNamespace() != k.Namespace {
			t.Errorf("%s: namespace %q after the build, want %q", o.kindName(), accessor.GetNamespace(), k.Namespace)
		}
		var spec *corev1.PodSpec
		switch obj := obj.(type) {
		case *appsv1.Deployment:
			spec = &obj.Spec.Template.Spec
		case *batchv1.Job:
			spec = &obj.Spec.Template.Spec
		}
		if spec == nil {
			continue
		}
		// The images entry is what sets every jetflow image: none escapes it.
		for _, c := range spec.Containers {
			if c.Image != wantImage {
				t.Errorf("%s: container %s runs %q after the build, want %q (kustomization images)", o.kindName(), c.Name, c.Image, wantImage)
			}
		}
	}
	sort.Strings(built)
	var want []string
	for _, names := range k8sWant {
		want = append(want, names...)
	}
	sort.Strings(want)
	if !slices.Equal(built, want) {
		t.Errorf("kustomize builds %v, want %v", built, want)
	}
}
