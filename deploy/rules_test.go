package deploy

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the generated PrometheusRule manifests from prometheus/watcher-rules.yml")

const (
	rulesPath     = "prometheus/watcher-rules.yml"
	rulesTestPath = "prometheus/watcher-rules.test.yml"
)

// prometheusRuleFiles are the PrometheusRule manifests generated from rulesPath.
var prometheusRuleFiles = []string{"kubernetes/prometheusrule.yaml", "kubernetes-cluster/prometheusrule.yaml"}

// TestRuleUnitTests runs the rules' unit tests with Prometheus's own promtool, which
// must be installed (Debian package prometheus; .ci/run installs it).
func TestRuleUnitTests(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is required to test the alert rules (apt-get install prometheus): %v", err)
	}
	for _, args := range [][]string{{"check", "rules", rulesPath}, {"test", "rules", rulesTestPath}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRuleUnitTestsCoverEveryAlert checks that the unit tests make every alert fire
// at least once and also expect it silent at least once.
func TestRuleUnitTestsCoverEveryAlert(t *testing.T) {
	data, err := os.ReadFile(rulesTestPath)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name       string `yaml:"name"`
			AlertTests []struct {
				Alert     string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tf.RuleFiles, []string{"watcher-rules.yml"}) {
		t.Errorf("rule_files %v, want watcher-rules.yml", tf.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, at := range tc.AlertTests {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alert] = true
			} else {
				silent[at.Alert] = true
			}
		}
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: the unit tests expect it firing %v, silent %v; want both", r.Alert, fires[r.Alert], silent[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules read")
	}
}

// prometheusRule renders the PrometheusRule manifest carrying the groups of the rules
// file, unchanged.
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	var rules struct {
		Groups yaml.Node `yaml:"groups"`
	}
	data, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name": "watcher",
			"labels": map[string]string{
				"app.kubernetes.io/name": "watcher", "app.kubernetes.io/part-of": "payments-watcher",
				"release": "kube-prometheus-stack",
			},
		},
		"spec": map[string]any{"groups": &rules.Groups},
	}
	var buf bytes.Buffer
	buf.WriteString("# Generated from deploy/prometheus/watcher-rules.yml; do not edit. Regenerate with\n" +
		"#   go test ./deploy/ -run TestPrometheusRuleMatchesRulesFile -update\n" +
		"# The release label is the one kube-prometheus-stack's Prometheus selects by default.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPrometheusRuleMatchesRulesFile keeps each generated PrometheusRule identical to
// what the rules file makes, and its groups equal to the file's.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	want := prometheusRule(t)
	var rules map[string]any
	if err := yaml.Unmarshal(mustRead(t, rulesPath), &rules); err != nil {
		t.Fatal(err)
	}
	for _, f := range prometheusRuleFiles {
		if *update {
			if err := os.WriteFile(f, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got := mustRead(t, f)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what %s generates; run go test ./deploy/ -run TestPrometheusRuleMatchesRulesFile -update", f, rulesPath)
		}
		var pr map[string]any
		if err := yaml.Unmarshal(got, &pr); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !reflect.DeepEqual(get(pr, "spec", "groups"), rules["groups"]) {
			t.Errorf("%s: spec.groups differ from the groups of %s", f, rulesPath)
		}
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
