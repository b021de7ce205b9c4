// Package deploy holds watcher's deployment files: the container image, a compose
// stack, Kubernetes manifests, a systemd unit, a Grafana dashboard and Prometheus
// alert rules. Its tests check those files against the code they deploy: every
// series a query names is one the binary exports, with labels and label values it
// can carry; every shipped configuration passes watcher's own validation; the
// manifests agree with each other and with the configuration they mount.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
)

// series is what the binary exports under one metric name.
type series struct {
	typ    string              // COUNTER, GAUGE, HISTOGRAM, … ("" when not gathered)
	labels []string            // variable and constant label names
	values map[string][]string // label values present before anything is observed
}

// recorder registers on a real registry and remembers the collectors, so that series
// without samples yet can be listed from their descriptors.
type recorder struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

var (
	descName        = regexp.MustCompile(`fqName: "([^"]*)"`)
	descConstLabels = regexp.MustCompile(`constLabels: \{(.*?)\}, variableLabels`)
	descVarLabels   = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	constLabelName  = regexp.MustCompile(`(\w+)="`)
)

// exported builds the registry the way the daemon does (one source, "cpn") and
// returns every series it can export, by name.
func exported(t *testing.T) map[string]*series {
	t.Helper()
	rec := &recorder{reg: prometheus.NewRegistry()}
	metrics.New(rec, []string{"cpn"})
	if err := metrics.RegisterBuildInfo(rec, "test", "test"); err != nil {
		t.Fatalf("RegisterBuildInfo: %v", err)
	}
	if err := metrics.RegisterStateFile(rec, func() (int64, int64, error) { return 0, 0, nil }); err != nil {
		t.Fatalf("RegisterStateFile: %v", err)
	}
	out := map[string]*series{}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			s := d.String()
			m := descName.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("descriptor without a name: %s", s)
			}
			se := &series{values: map[string][]string{}}
			if v := descVarLabels.FindStringSubmatch(s); v != nil && v[1] != "" {
				for _, l := range strings.Split(v[1], ",") {
					se.labels = append(se.labels, strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"))
				}
			}
			if cl := descConstLabels.FindStringSubmatch(s); cl != nil {
				for _, l := range constLabelName.FindAllStringSubmatch(cl[1], -1) {
					se.labels = append(se.labels, l[1])
				}
			}
			out[m[1]] = se
		}
	}
	families, err := rec.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range families {
		se, ok := out[f.GetName()]
		if !ok {
			t.Fatalf("gathered %s, which no collector describes", f.GetName())
		}
		se.typ = f.GetType().String()
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(se.values[lp.GetName()], lp.GetValue()) {
					se.values[lp.GetName()] = append(se.values[lp.GetName()], lp.GetValue())
				}
			}
		}
	}
	// No transition has happened in a fresh registry; its state label takes the
	// normalized states.
	for _, s := range diff.States {
		out["watcher_transitions_total"].values["state"] = append(out["watcher_transitions_total"].values["state"], string(s))
	}
	return out
}

func TestExportedHasWhatTheQueriesNeed(t *testing.T) {
	// The test's own premise: the descriptors list the series that have no sample yet.
	got := exported(t)
	for _, name := range []string{"watcher_transitions_total", "watcher_unknown_status_total", "watcher_publish_latency_seconds",
		"watcher_oldest_open_item_age_seconds", "watcher_build_info"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not among the exported series", name)
		}
	}
	if typ := got["watcher_publish_latency_seconds"].typ; typ != "HISTOGRAM" {
		t.Errorf("watcher_publish_latency_seconds has type %q, want HISTOGRAM", typ)
	}
	if !slices.Contains(got["watcher_polls_total"].values["result"], "auth_error") {
		t.Errorf("watcher_polls_total result values %v lack auth_error", got["watcher_polls_total"].values["result"])
	}
}

// selector is one use of a watcher_* series in a query.
type selector struct {
	where, name string
	matchers    []matcher
}

type matcher struct{ label, op, value string }

var (
	seriesRef  = regexp.MustCompile(`\b(watcher_[a-zA-Z0-9_]+)\b(\{[^}]*\})?`)
	matcherRef = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	plainAlt   = regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`)
)

func selectors(where, expr string) []selector {
	var out []selector
	for _, m := range seriesRef.FindAllStringSubmatch(expr, -1) {
		s := selector{where: where, name: m[1]}
		for _, mm := range matcherRef.FindAllStringSubmatch(m[2], -1) {
			s.matchers = append(s.matchers, matcher{label: mm[1], op: mm[2], value: mm[3]})
		}
		out = append(out, s)
	}
	return out
}

// closedLabels are the labels whose values the metrics package limits to a fixed set.
var closedLabels = []string{"result", "purpose", "code", "reason", "state"}

// checkSelector reports a series the binary does not export, a label it does not
// carry, or a value of a closed label it never takes.
func checkSelector(exp map[string]*series, s selector) error {
	name := s.name
	se, ok := exp[name]
	if !ok {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base := strings.TrimSuffix(name, suffix)
			if b, found := exp[base]; base != name && found && b.typ == "HISTOGRAM" {
				name, se, ok = base, b, true
				if suffix == "_bucket" {
					se = &series{typ: b.typ, labels: append(slices.Clone(b.labels), "le"), values: b.values}
				}
				break
			}
		}
	}
	if !ok {
		return fmt.Errorf("%s: %s is not exported by watcher", s.where, s.name)
	}
	var errs []error
	for _, m := range s.matchers {
		if !slices.Contains(se.labels, m.label) {
			errs = append(errs, fmt.Errorf("%s: %s has no label %q (it has %v)", s.where, name, m.label, se.labels))
			continue
		}
		if !slices.Contains(closedLabels, m.label) || strings.HasPrefix(m.op, "!") {
			continue
		}
		var want []string
		switch {
		case m.op == "=":
			want = []string{m.value}
		case plainAlt.MatchString(m.value):
			want = strings.Split(m.value, "|")
		}
		for _, v := range want {
			if !slices.Contains(se.values[m.label], v) {
				errs = append(errs, fmt.Errorf("%s: %s{%s} never takes the value %q (it takes %v)", s.where, name, m.label, v, se.values[m.label]))
			}
		}
	}
	return errors.Join(errs...)
}

func TestCheckSelectorCatchesMistakes(t *testing.T) {
	exp := exported(t)
	for expr, want := range map[string]string{
		`rate(watcher_polls_total{result="ok"}[5m])`:                                 "",
		`watcher_publish_latency_seconds_bucket{le="1"}`:                             "",
		`watcher_publish_latency_seconds_count`:                                      "",
		`increase(watcher_transitions_total{state=~"failed|expired"}[1h])`:           "",
		`watcher_polls_total{result=~"error|timeout"}`:                               `never takes the value "timeout"`,
		`watcher_transitions_total{status="failed"}`:                                 `has no label "status"`,
		`watcher_poll_total`:                                                         "is not exported",
		`watcher_outbox_depth_count`:                                                 "is not exported",
		`watcher_publish_errors_total{reason="disconnected"}`:                        `never takes the value "disconnected"`,
		`watcher_provider_requests_total{code="429", purpose!="nope", source="cpn"}`: "",
	} {
		var errs []error
		for _, s := range selectors("expr", expr) {
			if err := checkSelector(exp, s); err != nil {
				errs = append(errs, err)
			}
		}
		err := errors.Join(errs...)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", expr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: error %v, want one containing %q", expr, err, want)
		}
	}
}

// dashboardExprs returns every query of the dashboard (panel targets and template
// variables), each with where it is.
func dashboardExprs(t *testing.T, dash map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if title, ok := v["title"].(string); ok {
				where += "/" + title
			} else if name, ok := v["name"].(string); ok {
				where += "/" + name
			}
			for k, c := range v {
				if s, ok := c.(string); ok && (k == "expr" || k == "definition" || k == "query") {
					out[where+"."+k] = s
					continue
				}
				walk(where, c)
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", where, i), c)
			}
		}
	}
	walk("dashboard", dash)
	return out
}

func readDashboard(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile("grafana/watcher-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/watcher-dashboard.json: %v", err)
	}
	return dash
}

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	data, err := os.ReadFile("prometheus/watcher-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("prometheus/watcher-rules.yml: %v", err)
	}
	return rf
}

func TestQueriesUseExportedSeries(t *testing.T) {
	exp := exported(t)
	exprs := dashboardExprs(t, readDashboard(t))
	dashboardUses := map[string]bool{}
	for where, expr := range exprs {
		for _, s := range selectors(where, expr) {
			if err := checkSelector(exp, s); err != nil {
				t.Error(err)
			}
			dashboardUses[strings.TrimSuffix(s.name, "_bucket")] = true
		}
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, s := range selectors("rules/"+g.Name+"/"+r.Alert, r.Expr) {
				n++
				if err := checkSelector(exp, s); err != nil {
					t.Error(err)
				}
			}
		}
	}
	if n == 0 || len(dashboardUses) == 0 {
		t.Fatalf("found %d series in the rules and %d in the dashboard; the extraction is broken", n, len(dashboardUses))
	}
	// Every watcher series has a place on the dashboard.
	for name := range exp {
		if strings.HasPrefix(name, "watcher_") && !dashboardUses[name] {
			t.Errorf("the dashboard shows nothing of %s", name)
		}
	}
}

func TestDashboard(t *testing.T) {
	dash := readDashboard(t)
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v, want 36 or later", dash["schemaVersion"])
	}
	vars := map[string]map[string]any{}
	tmpl, _ := dash["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	for _, v := range list {
		m := v.(map[string]any)
		vars[m["name"].(string)] = m
	}
	if ds := vars["datasource"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("datasource variable = %v, want a prometheus datasource variable", ds)
	}
	if src := vars["source"]; src == nil || src["definition"] != "label_values(watcher_polls_total, source)" {
		t.Errorf("source variable = %v, want label_values(watcher_polls_total, source)", src)
	}
	ids := map[float64]string{}
	panels, _ := dash["panels"].([]any)
	if len(panels) < 10 {
		t.Fatalf("%d panels", len(panels))
	}
	for _, p := range panels {
		p := p.(map[string]any)
		title, _ := p["title"].(string)
		id, _ := p["id"].(float64)
		if prev, dup := ids[id]; dup {
			t.Errorf("panels %q and %q share id %v", prev, title, id)
		}
		ids[id] = title
		grid, _ := p["gridPos"].(map[string]any)
		if grid == nil || grid["w"].(float64)+grid["x"].(float64) > 24 {
			t.Errorf("panel %q: gridPos %v is missing or wider than 24", title, grid)
		}
		if p["type"] == "row" {
			continue
		}
		targets, _ := p["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, tg := range targets {
			ds, _ := tg.(map[string]any)["datasource"].(map[string]any)
			if ds["uid"] != "${datasource}" {
				t.Errorf("panel %q: a query uses datasource %v, not ${datasource}", title, ds)
			}
		}
	}
}

func TestRules(t *testing.T) {
	rf := readRules(t)
	names := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: a rule without alert or expr", where)
				continue
			}
			if names[r.Alert] {
				t.Errorf("%s: alert name used twice", where)
			}
			names[r.Alert] = true
			if r.For == "" {
				t.Errorf("%s: no for", where)
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want critical, warning or info", where, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", where)
			}
		}
	}
	for _, want := range []string{"WatcherSourceStale", "WatcherSourceFailing", "WatcherFailedPaymentsHigh", "WatcherOutboxGrowing",
		"WatcherOutboxOld", "WatcherUnknownStatus", "WatcherStalledItemsGrowing", "WatcherNATSUnreachable"} {
		if !names[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, file string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func TestEveryFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml":
			if len(yamlDocs(t, p)) == 0 {
				t.Errorf("%s: no YAML document", p)
			}
			n++
		case ".json":
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !json.Valid(data) {
				t.Errorf("%s: not valid JSON", p)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("parsed %d files under deploy/, fewer than shipped", n)
	}
}

// get follows a path of map keys and list indexes through a decoded document.
func get(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, keys ...any) string {
	s, _ := get(v, keys...).(string)
	return s
}

// kubeObjects returns the objects of deploy/kubernetes by kind, checking what every
// object needs and that kustomization.yaml lists exactly the files present.
func kubeObjects(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kust := yamlDocs(t, "kubernetes/kustomization.yaml")[0]
	var listed []string
	for _, r := range get(kust, "resources").([]any) {
		listed = append(listed, "kubernetes/"+r.(string))
	}
	objs := map[string]map[string]any{}
	var present []string
	for _, f := range files {
		if f == "kubernetes/kustomization.yaml" {
			continue
		}
		present = append(present, f)
		for _, doc := range yamlDocs(t, f) {
			kind := str(doc, "kind")
			if str(doc, "apiVersion") == "" || kind == "" || str(doc, "metadata", "name") == "" {
				t.Errorf("%s: apiVersion, kind and metadata.name are required, got %q %q %q", f, str(doc, "apiVersion"), kind, str(doc, "metadata", "name"))
			}
			if ns := get(doc, "metadata", "namespace"); ns != nil {
				t.Errorf("%s: %s sets metadata.namespace %v; the namespace is the applier's", f, kind, ns)
			}
			if _, dup := objs[kind]; dup {
				t.Errorf("%s: a second %s", f, kind)
			}
			objs[kind] = doc
		}
	}
	slices.Sort(listed)
	if !slices.Equal(listed, present) {
		t.Errorf("kustomization.yaml resources %v, files %v", listed, present)
	}
	return objs
}

func labelsMatch(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	objs := kubeObjects(t)
	for _, kind := range []string{"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} {
		if objs[kind] == nil {
			t.Fatalf("no %s in deploy/kubernetes", kind)
		}
	}
	sts, svc, cm := objs["StatefulSet"], objs["Service"], objs["ConfigMap"]
	if r, _ := get(sts, "spec", "replicas").(int); r != 1 {
		t.Errorf("StatefulSet replicas %v, want 1 (one watcher per state file)", get(sts, "spec", "replicas"))
	}
	podLabels := get(sts, "spec", "template", "metadata", "labels")
	if !labelsMatch(get(sts, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("StatefulSet selector does not match its pod labels %v", podLabels)
	}
	if !labelsMatch(get(svc, "spec", "selector"), podLabels) {
		t.Errorf("Service selector does not match the pod labels %v", podLabels)
	}
	if !labelsMatch(get(objs["PodDisruptionBudget"], "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("PodDisruptionBudget selector does not match the pod labels %v", podLabels)
	}
	if !labelsMatch(get(objs["ServiceMonitor"], "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
		t.Errorf("ServiceMonitor selector does not match the Service's labels")
	}
	if str(sts, "spec", "serviceName") != str(svc, "metadata", "name") {
		t.Errorf("StatefulSet serviceName %q, Service %q", str(sts, "spec", "serviceName"), str(svc, "metadata", "name"))
	}
	if str(svc, "spec", "ports", 0, "name") != "metrics" || get(svc, "spec", "ports", 0, "port") != 9464 {
		t.Errorf("Service port %v, want metrics 9464", get(svc, "spec", "ports", 0))
	}
	if str(objs["ServiceMonitor"], "apiVersion") != "monitoring.coreos.com/v1" || str(objs["ServiceMonitor"], "spec", "endpoints", 0, "port") != "metrics" {
		t.Errorf("ServiceMonitor %v does not scrape the metrics port", get(objs["ServiceMonitor"], "spec"))
	}

	pod := get(sts, "spec", "template", "spec")
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("pod securityContext.runAsNonRoot is not true")
	}
	c := get(pod, "containers", 0)
	if get(c, "securityContext", "runAsNonRoot") != true || get(c, "securityContext", "readOnlyRootFilesystem") != true ||
		get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("container securityContext %v: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation", get(c, "securityContext"))
	}
	if drop, _ := get(c, "securityContext", "capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
		t.Errorf("container capabilities.drop %v, want ALL", drop)
	}
	if get(c, "ports", 0, "name") != "metrics" || get(c, "ports", 0, "containerPort") != 9464 {
		t.Errorf("container port %v, want metrics 9464", get(c, "ports", 0))
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if str(c, probe, "httpGet", "path") != want || str(c, probe, "httpGet", "port") != "metrics" {
			t.Errorf("%s %v, want GET %s on port metrics", probe, get(c, probe), want)
		}
	}
	if get(c, "resources", "requests", "memory") == nil || get(c, "resources", "limits", "memory") == nil {
		t.Errorf("container resources %v: want memory requests and limits", get(c, "resources"))
	}

	// The configuration it mounts is valid with the generated Secret's example
	// values, keeps its state on the claimed volume and listens where the probes look.
	name, env := generatedSecret(t, "kubernetes")
	if str(c, "envFrom", 0, "secretRef", "name") != name {
		t.Errorf("container envFrom %v does not name the generated Secret %q", get(c, "envFrom"), name)
	}
	cfg := parseConfig(t, "ConfigMap watcher.yaml", []byte(str(cm, "data", "watcher.yaml")), env)
	mounts := map[string]string{}
	for _, m := range get(c, "volumeMounts").([]any) {
		mounts[str(m, "mountPath")] = str(m, "name")
	}
	if claim := str(sts, "spec", "volumeClaimTemplates", 0, "metadata", "name"); mounts[path.Dir(cfg.State.Path)] != claim || claim == "" {
		t.Errorf("state.path %s is not on the claimed volume %q (mounts %v)", cfg.State.Path, claim, mounts)
	}
	args, _ := get(c, "args").([]any)
	confPath := argAfter(args, "--config")
	if mounts[path.Dir(confPath)] != "config" || str(sts, "spec", "template", "spec", "volumes", 0, "configMap", "name") != str(cm, "metadata", "name") {
		t.Errorf("--config %s is not the mounted ConfigMap (mounts %v)", confPath, mounts)
	}
	if host, port := splitListen(t, cfg.HTTP.Listen); port != "9464" || host == "127.0.0.1" {
		t.Errorf("http.listen %q: the probes and the Service need 0.0.0.0:9464", cfg.HTTP.Listen)
	}
}

func argAfter(args []any, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			s, _ := args[i+1].(string)
			return s
		}
	}
	return ""
}

func splitListen(t *testing.T, listen string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("%q: %v", listen, err)
	}
	return host, port
}

// parseConfig runs what `watcher config check` runs on data, with env as the whole
// environment; *_file secrets read as a placeholder key.
func parseConfig(t *testing.T, what string, data []byte, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(data, func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		func(name string) ([]byte, error) { return []byte("placeholder-secret-" + filepath.Base(name)), nil })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return cfg
}

var composeDefault = regexp.MustCompile(`^\$\{([A-Z0-9_]+):-(.*)\}$`)

func TestCompose(t *testing.T) {
	doc := yamlDocs(t, "docker-compose.yml")[0]
	services, _ := get(doc, "services").(map[string]any)
	for _, name := range []string{"nats", "sim", "watcher"} {
		if services[name] == nil {
			t.Fatalf("no service %s", name)
		}
		if get(services[name], "healthcheck", "test") == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	w := services["watcher"]
	// One image, built once by the watcher service and reused by the simulator.
	for name, svc := range services {
		if b := get(svc, "build"); b != nil && name != "watcher" {
			t.Errorf("service %s builds an image too: %v", name, b)
		}
	}
	if str(w, "build", "dockerfile") != "deploy/Dockerfile" || str(w, "image") == "" || str(services["sim"], "image") != str(w, "image") {
		t.Errorf("watcher builds %v as %q, sim runs %q: want one image built by watcher and run by both",
			get(w, "build"), str(w, "image"), str(services["sim"], "image"))
	}
	for _, name := range []string{"watcher", "sim"} {
		if test := fmt.Sprint(get(services[name], "healthcheck", "test")); !strings.HasPrefix(test, "[CMD watcher healthcheck --url ") {
			t.Errorf("service %s healthcheck %s, want the watcher healthcheck subcommand (the image has no wget)", name, test)
		}
	}
	for _, dep := range []string{"nats", "sim"} {
		if str(w, "depends_on", dep, "condition") != "service_healthy" {
			t.Errorf("watcher depends_on %s: %v, want condition service_healthy", dep, get(w, "depends_on", dep))
		}
	}
	natsCmd := fmt.Sprint(get(services["nats"], "command"))
	if img := str(services["nats"], "image"); !regexp.MustCompile(`^nats:\d+\.\d+\.\d+`).MatchString(img) || !strings.Contains(natsCmd, "-js") {
		t.Errorf("nats service %s %s: want a pinned nats image running JetStream", img, natsCmd)
	}

	// The environment the compose file gives watcher: each ${VAR:-default} at its
	// default, which must be the simulator's demo credential.
	demo := map[string]string{
		"CIRCLE_CPN_API_KEY": sim.DefaultCircleCPNKey, "CIRCLE_RAMP_API_KEY": sim.DefaultCircleRampKey,
		"CIRCLE_MINT_API_KEY": sim.DefaultCircleSettlementsKey, "STRIPE_SECRET_KEY": sim.DefaultStripeSecretKey,
		"COINDIRECT_HAWK_ID": sim.DefaultCoindirectHawkID, "COINDIRECT_HAWK_KEY": sim.DefaultCoindirectHawkKey,
		"COINDIRECT_MERCHANT_ID": sim.DefaultCoindirectMerchantID,
	}
	env := map[string]string{}
	for k, v := range get(w, "environment").(map[string]any) {
		m := composeDefault.FindStringSubmatch(v.(string))
		if m == nil || m[1] != k {
			t.Errorf("environment %s: %v, want ${%s:-default}", k, v, k)
			continue
		}
		env[k] = m[2]
		if want, ok := demo[k]; ok && m[2] != want {
			t.Errorf("environment %s defaults to %q, the simulator accepts %q", k, m[2], want)
		}
	}

	// The mounted file is the one --config names, and it is valid with that environment.
	confPath := argAfter(get(w, "command").([]any), "--config")
	var hostFile, dataVolume string
	for _, v := range get(w, "volumes").([]any) {
		parts := strings.Split(v.(string), ":")
		switch {
		case len(parts) >= 2 && parts[1] == confPath:
			hostFile = parts[0]
		case len(parts) >= 2 && !strings.HasPrefix(parts[0], "."):
			dataVolume = parts[1]
		}
	}
	if hostFile == "" {
		t.Fatalf("no volume mounts --config %s", confPath)
	}
	data, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, hostFile, data, env)
	if dataVolume == "" || path.Dir(cfg.State.Path) != dataVolume {
		t.Errorf("state.path %s is not on the named volume (mounted at %q)", cfg.State.Path, dataVolume)
	}
	var providers []string
	simArgs := get(services["sim"], "command").([]any)
	_, simPort := splitListen(t, argAfter(simArgs, "--listen"))
	for _, s := range cfg.Sources {
		providers = append(providers, s.Config.Provider)
		u, err := url.Parse(s.Settings.BaseURL)
		if err != nil || u.Hostname() != "sim" || u.Port() != simPort {
			t.Errorf("source %s base_url %q, want the sim service on port %s", s.Name, s.Settings.BaseURL, simPort)
		}
	}
	slices.Sort(providers)
	if want := poller.ProviderIDs(); !slices.Equal(providers, want) {
		t.Errorf("compose sources poll %v, want every provider %v", providers, want)
	}
	if u, err := url.Parse(cfg.NATS.URL); err != nil || services[u.Hostname()] == nil {
		t.Errorf("nats.url %q does not name a compose service", cfg.NATS.URL)
	}
	if _, port := splitListen(t, cfg.HTTP.Listen); !slices.Contains(get(w, "ports").([]any), any("127.0.0.1:"+port+":"+port)) {
		t.Errorf("http.listen %s is not published (ports %v)", cfg.HTTP.Listen, get(w, "ports"))
	}
}

func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("watcher.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, "watcher.example.yaml", data, map[string]string{"CREDENTIALS_DIRECTORY": "/run/credentials/watcher.service"})
	if len(cfg.Sources) == 0 {
		t.Fatal("watcher.example.yaml has no source")
	}
	// It is the configuration the systemd unit runs: state in its StateDirectory,
	// secrets in its ConfigurationDirectory.
	unit := systemdUnit(t)
	if dir := "/var/lib/" + unit["StateDirectory"][0]; path.Dir(cfg.State.Path) != dir {
		t.Errorf("state.path %s is outside the unit's StateDirectory %s", cfg.State.Path, dir)
	}
}

// systemdUnit returns the unit's settings, every value of each key in order.
func systemdUnit(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("systemd/watcher.service")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("systemd/watcher.service:%d: %q is not key=value", i+1, line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	unit := systemdUnit(t)
	for k, want := range map[string]string{
		"DynamicUser": "yes", "StateDirectory": "watcher", "ConfigurationDirectory": "watcher", "ProtectSystem": "strict",
		"ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "Restart": "on-failure",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "EnvironmentFile": "-/etc/watcher/env", "TimeoutStopSec": "30",
	} {
		if !slices.Contains(unit[k], want) {
			t.Errorf("%s=%v, want %s", k, unit[k], want)
		}
	}
	if !slices.Contains(unit["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter=%v, want @system-service", unit["SystemCallFilter"])
	}
	exec := strings.Fields(strings.Join(unit["ExecStart"], ""))
	if len(exec) < 2 || exec[1] != "run" {
		t.Fatalf("ExecStart %v does not run watcher", exec)
	}
	args := make([]any, len(exec))
	for i, a := range exec {
		args[i] = a
	}
	if conf := argAfter(args, "--config"); path.Dir(conf) != "/etc/"+unit["ConfigurationDirectory"][0] {
		t.Errorf("--config %s is outside the ConfigurationDirectory", conf)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{`ENTRYPOINT ["watcher"]`, `CMD ["run", "--config", "/etc/watcher/watcher.yaml"]`, "EXPOSE 9464",
		`VOLUME ["/var/lib/watcher"]`, "CGO_ENABLED=0", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}",
		`CMD ["watcher", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]`,
		"org.opencontainers.image.version=\"${VERSION}\"", "org.opencontainers.image.revision=\"${COMMIT}\"",
		"org.opencontainers.image.source=", "org.opencontainers.image.created="} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	// The ldflags set a variable that exists, in the package it builds.
	build := regexp.MustCompile(`go build [^\n]*(?:\\\n[^\n]*)*-o \S+ (\./\S+)`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("Dockerfile: no go build of a ./ package")
	}
	main, err := os.ReadFile(filepath.Join("..", build[1], "main.go"))
	if err != nil {
		t.Fatalf("Dockerfile builds %s: %v", build[1], err)
	}
	for _, v := range []string{"version", "commit"} {
		if !regexp.MustCompile(`(?m)^var ` + v + ` = `).Match(main) {
			t.Errorf("%s/main.go declares no var %s for -X main.%s", build[1], v, v)
		}
	}
	// The runtime stage is distroless: no shell, so every RUN belongs to the build
	// stage and the health check is the binary's own.
	stages := regexp.MustCompile(`(?m)^FROM `).Split(df, -1)
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("runtime stage FROM %.60q, want gcr.io/distroless/static-debian12:nonroot", final)
	}
	if regexp.MustCompile(`(?m)^RUN `).MatchString(final) {
		t.Error("the runtime stage has a RUN; distroless has no shell to run it")
	}
	// The final stage runs as a numeric, non-root user.
	users := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 {
		t.Fatal("Dockerfile sets no USER")
	}
	uid, _, _ := strings.Cut(users[len(users)-1][1], ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s, want a numeric non-root uid (Kubernetes runAsNonRoot checks it)", users[len(users)-1][1])
	}
}

// TestKubernetesCluster checks deploy/kubernetes-cluster: kustomization.yaml lists
// exactly its files, the watcher configuration parses with the nats_kv back end and
// names each pod as its replica, and the Deployment runs it against the NATS cluster.
func TestKubernetesCluster(t *testing.T) {
	files, err := filepath.Glob("kubernetes-cluster/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kust := yamlDocs(t, "kubernetes-cluster/kustomization.yaml")[0]
	var listed []string
	for _, r := range get(kust, "resources").([]any) {
		listed = append(listed, "kubernetes-cluster/"+r.(string))
	}
	listed = append(listed, "kubernetes-cluster/kustomization.yaml")
	slices.Sort(listed)
	if !slices.Equal(files, listed) {
		t.Errorf("kustomization.yaml lists %v, the directory holds %v", listed, files)
	}
	kinds := map[string]any{}
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			kinds[str(d, "kind")+"/"+str(d, "metadata", "name")] = d
		}
	}
	cm := kinds["ConfigMap/watcher-cluster-config"]
	dep := kinds["Deployment/watcher"]
	nats := kinds["StatefulSet/nats"]
	if cm == nil || dep == nil || nats == nil {
		t.Fatalf("missing objects; have %v", slices.Sorted(maps.Keys(kinds)))
	}
	secretName, secrets := generatedSecret(t, "kubernetes-cluster")
	env := map[string]string{}
	for _, e := range get(dep, "spec", "template", "spec", "containers", 0, "env").([]any) {
		name := str(e, "name")
		if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil {
			v, ok := secrets[str(ref, "key")]
			if str(ref, "name") != secretName || !ok {
				t.Errorf("env %s reads %v, which the generated Secret %s (%v) does not hold", name, ref, secretName, slices.Sorted(maps.Keys(secrets)))
			}
			env[name] = v
		}
	}
	env["POD_NAME"] = "watcher-5d8f9c7b4-x2k9q"
	cfg := parseConfig(t, "kubernetes-cluster/configmap.yaml", []byte(str(cm, "data", "watcher.yaml")), env)
	if cfg.State.Backend != "nats_kv" || cfg.Cluster.ReplicaID != env["POD_NAME"] || cfg.State.NATSKV.Replicas != 3 {
		t.Errorf("state %+v, cluster %+v: want nats_kv with 3 copies and the pod name as replica id", cfg.State, cfg.Cluster)
	}
	if n, _ := get(dep, "spec", "replicas").(int); n < 2 {
		t.Errorf("Deployment runs %d replicas", n)
	}
	if n, _ := get(nats, "spec", "replicas").(int); n != 3 {
		t.Errorf("NATS StatefulSet runs %d nodes, want 3", n)
	}
	for _, name := range []string{"nats-0.nats", "nats-1.nats", "nats-2.nats"} {
		if !strings.Contains(cfg.NATS.URL, name) {
			t.Errorf("nats.url %s does not name %s", cfg.NATS.URL, name)
		}
	}
}

// generatedSecret returns the name of the Secret the kustomization in dir generates
// and the values of secrets.env.example, the file its secrets.env is copied from.
func generatedSecret(t *testing.T, dir string) (string, map[string]string) {
	t.Helper()
	kust := yamlDocs(t, dir+"/kustomization.yaml")[0]
	gen := get(kust, "secretGenerator", 0)
	if envs := get(gen, "envs"); !reflect.DeepEqual(envs, []any{"secrets.env"}) {
		t.Fatalf("%s: secretGenerator envs %v, want [secrets.env]", dir, envs)
	}
	data, err := os.ReadFile(dir + "/secrets.env.example")
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s/secrets.env.example: %q is not KEY=value", dir, line)
		}
		values[k] = v
	}
	ignored, err := os.ReadFile("../.gitignore")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(ignored), "\n"), "/deploy/"+dir+"/secrets.env") {
		t.Errorf(".gitignore does not ignore deploy/%s/secrets.env", dir)
	}
	return str(gen, "name"), values
}
