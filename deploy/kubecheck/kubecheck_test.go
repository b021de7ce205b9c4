package kubecheck

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// variants are the kustomization directories, relative to this package.
var variants = []string{"../kubernetes", "../kubernetes-cluster"}

// build runs the kustomization in dir the way kubectl apply -k would, on an
// in-memory copy of its files where secrets.env is secrets.env.example, and returns
// each object's YAML.
func build(t *testing.T, dir string) [][]byte {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "secrets.env" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		name := e.Name()
		if name == "secrets.env.example" {
			name = "secrets.env"
		}
		if err := fs.WriteFile("/app/"+name, data); err != nil {
			t.Fatal(err)
		}
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/app")
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out [][]byte
	for _, r := range resources.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, y)
	}
	return out
}

// strictCodec decodes the built-in kinds the manifests use, rejecting unknown and
// duplicate fields.
var strictCodec = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
}()

// The Prometheus Operator's kinds, as far as the manifests use them: decoding into
// these with UnmarshalStrict rejects any other field.
type (
	serviceMonitor struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Selector  metav1.LabelSelector `json:"selector"`
			Endpoints []struct {
				Port          string `json:"port"`
				Path          string `json:"path"`
				Interval      string `json:"interval"`
				ScrapeTimeout string `json:"scrapeTimeout"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	prometheusRule struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Alert       string            `json:"alert"`
					Expr        string            `json:"expr"`
					For         string            `json:"for"`
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
)

// decode decodes one object strictly into its API type.
func decode(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj runtime.Object
	switch tm.APIVersion + "/" + tm.Kind {
	case "monitoring.coreos.com/v1/ServiceMonitor":
		obj = &serviceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		obj = &prometheusRule{}
	default:
		o, _, err := strictCodec.Decode(doc, nil, nil)
		return o, err
	}
	return obj, yaml.UnmarshalStrict(doc, obj)
}

func (s *serviceMonitor) DeepCopyObject() runtime.Object { c := *s; return &c }
func (p *prometheusRule) DeepCopyObject() runtime.Object { c := *p; return &c }

// objects builds dir and decodes every object, failing the test on any error.
func objects(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, doc := range build(t, dir) {
		obj, err := decode(doc)
		if err != nil {
			t.Errorf("%s: %v\n%s", dir, err, doc)
			continue
		}
		out = append(out, obj)
	}
	return out
}

// podTemplate is a workload's pod template and a name for messages.
type podTemplate struct {
	what string
	meta metav1.ObjectMeta
	spec corev1.PodSpec
}

func podTemplates(objs []runtime.Object) []podTemplate {
	var out []podTemplate
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			out = append(out, podTemplate{"Deployment/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, podTemplate{"StatefulSet/" + o.Name, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec})
		}
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, dir := range variants {
		objs := objects(t, dir)
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[fmt.Sprintf("%T", o)]++
		}
		for _, want := range []string{"*v1.Secret", "*v1.ConfigMap", "*v1.Service", "*v1.PodDisruptionBudget", "*kubecheck.serviceMonitor", "*kubecheck.prometheusRule"} {
			if kinds[want] == 0 {
				t.Errorf("%s builds no %s (it builds %v)", dir, want, kinds)
			}
		}
		if len(podTemplates(objs)) == 0 {
			t.Errorf("%s builds no workload", dir)
		}
	}
}

// restricted evaluates a pod template against Pod Security "restricted" at the
// latest version and returns the reasons it is forbidden, if any.
func restricted(t *testing.T, p podTemplate) []string {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := policy.AggregateCheckResults(ev.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}, &p.meta, &p.spec))
	if res.Allowed {
		return nil
	}
	var out []string
	for i, r := range res.ForbiddenReasons {
		out = append(out, r+": "+res.ForbiddenDetails[i])
	}
	return out
}

func TestPodSecurityRestricted(t *testing.T) {
	for _, dir := range variants {
		for _, p := range podTemplates(objects(t, dir)) {
			if reasons := restricted(t, p); reasons != nil {
				t.Errorf("%s %s violates Pod Security restricted: %s", dir, p.what, strings.Join(reasons, "; "))
			} else {
				t.Logf("%s %s: Pod Security restricted (%s): allowed", dir, p.what, psapi.LatestVersion())
			}
		}
	}
}

// TestEveryContainerHasResources requires requests and a memory limit on every
// container, init containers included.
func TestEveryContainerHasResources(t *testing.T) {
	for _, dir := range variants {
		for _, p := range podTemplates(objects(t, dir)) {
			for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
				r := c.Resources
				if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
					t.Errorf("%s %s container %s: resources %v, want cpu and memory requests and a memory limit", dir, p.what, c.Name, r)
				}
			}
		}
	}
}

// provided lists the keys of each Secret and ConfigMap a build holds, by
// "Secret/name" and "ConfigMap/name".
func provided(objs []runtime.Object) map[string][]string {
	out := map[string][]string{}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			var keys []string
			for k := range o.Data {
				keys = append(keys, k)
			}
			for k := range o.StringData {
				keys = append(keys, k)
			}
			out["Secret/"+o.Name] = keys
		case *corev1.ConfigMap:
			var keys []string
			for k := range o.Data {
				keys = append(keys, k)
			}
			out["ConfigMap/"+o.Name] = keys
		}
	}
	return out
}

// missingReferences returns each Secret, ConfigMap or key that a pod reads and have
// does not hold; optional references are left out.
func missingReferences(p podTemplate, have map[string][]string) []string {
	var out []string
	need := func(kind, name, key string, optional *bool) {
		if optional != nil && *optional {
			return
		}
		keys, ok := have[kind+"/"+name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s %s/%s", p.what, kind, name))
		case key != "" && !slices.Contains(keys, key):
			out = append(out, fmt.Sprintf("%s %s/%s key %s", p.what, kind, name, key))
		}
	}
	for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
		for _, e := range c.Env {
			if vf := e.ValueFrom; vf != nil && vf.SecretKeyRef != nil {
				need("Secret", vf.SecretKeyRef.Name, vf.SecretKeyRef.Key, vf.SecretKeyRef.Optional)
			}
			if vf := e.ValueFrom; vf != nil && vf.ConfigMapKeyRef != nil {
				need("ConfigMap", vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key, vf.ConfigMapKeyRef.Optional)
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				need("Secret", ef.SecretRef.Name, "", ef.SecretRef.Optional)
			}
			if ef.ConfigMapRef != nil {
				need("ConfigMap", ef.ConfigMapRef.Name, "", ef.ConfigMapRef.Optional)
			}
		}
	}
	for _, v := range p.spec.Volumes {
		if v.Secret != nil {
			need("Secret", v.Secret.SecretName, "", v.Secret.Optional)
		}
		if v.ConfigMap != nil {
			need("ConfigMap", v.ConfigMap.Name, "", v.ConfigMap.Optional)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					need("Secret", s.Secret.Name, "", s.Secret.Optional)
				}
				if s.ConfigMap != nil {
					need("ConfigMap", s.ConfigMap.Name, "", s.ConfigMap.Optional)
				}
			}
		}
	}
	return out
}

func TestReferencedSecretsAndConfigMapsExist(t *testing.T) {
	for _, dir := range variants {
		objs := objects(t, dir)
		have := provided(objs)
		n := 0
		for _, p := range podTemplates(objs) {
			for _, m := range missingReferences(p, have) {
				t.Errorf("%s: %s is read but not provided by the kustomization", dir, m)
			}
			n++
		}
		if n == 0 {
			t.Errorf("%s: no pod template checked", dir)
		}
	}
}

// TestSecretsEnvIsIgnored checks that each variant's real secrets file is one git
// ignores, and that no variant ships a Secret manifest of its own.
func TestSecretsEnvIsIgnored(t *testing.T) {
	ignore, err := os.ReadFile("../../.gitignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, dir := range variants {
		rel := "/deploy/" + filepath.Base(dir) + "/secrets.env"
		if !slices.Contains(lines, rel) {
			t.Errorf(".gitignore lacks %s", rel)
		}
		if _, err := os.Stat(filepath.Join(dir, "secrets.env.example")); err != nil {
			t.Error(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, f := range files {
			data, _ := os.ReadFile(f)
			if bytes.Contains(data, []byte("\nkind: Secret\n")) {
				t.Errorf("%s defines a Secret; applying it would overwrite the real one", f)
			}
		}
	}
}

// The checks above must be able to fail: each is given a manifest with the fault it
// looks for.

func TestStrictDecodingRejectsMisspelling(t *testing.T) {
	doc := []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: x
          image: x
          securityContext:
            readOnlyRootFileSystem: true
`)
	if _, err := decode(doc); err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
		t.Errorf("decoding a misspelt field: %v, want an error naming it", err)
	}
	if _, err := decode([]byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoint: []}\n")); err == nil {
		t.Error("a ServiceMonitor with an unknown field decoded")
	}
}

func TestPodSecurityRejectsRootPod(t *testing.T) {
	p := podTemplate{what: "test", spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "nats", Image: "nats"}}}}
	if reasons := restricted(t, p); len(reasons) < 3 {
		t.Errorf("a pod without any securityContext: %v, want the restricted violations", reasons)
	}
}

func TestMissingReferencesFound(t *testing.T) {
	p := podTemplate{what: "test", spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "x", Env: []corev1.EnvVar{
			{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "A"}}},
			{Name: "B", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "B"}}},
		}}},
		Volumes: []corev1.Volume{{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}}},
	}}
	got := missingReferences(p, map[string][]string{"Secret/s": {"OTHER"}})
	want := []string{"test Secret/s key A", "test Secret/gone", "test ConfigMap/cm"}
	if !slices.Equal(got, want) {
		t.Errorf("missing references %v, want %v", got, want)
	}
}
