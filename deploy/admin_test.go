package deploy

import (
	"path"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/payments-watcher/watcher/config"
)

// TestAdminStaysPrivate checks that no shipped configuration exposes the admin
// listener (the /state/ API, which rebaselines sources and exports records) beyond
// its pod or host: each names it, as loopback TCP or a unix socket in a directory
// private to the service.
func TestAdminStaysPrivate(t *testing.T) {
	configs := map[string]string{
		"compose/watcher.yaml": str(yamlDocs(t, "compose/watcher.yaml")[0], "admin", "listen"),
		"watcher.example.yaml": str(yamlDocs(t, "watcher.example.yaml")[0], "admin", "listen"),
		"kubernetes":           adminOfConfigMap(t, "kubernetes/configmap.yaml"),
		"kubernetes-cluster":   adminOfConfigMap(t, "kubernetes-cluster/configmap.yaml"),
	}
	// Where each may put its socket: a directory nothing outside the pod or host sees.
	private := map[string]string{
		"compose/watcher.yaml": "/var/lib/watcher", // the watcher-data volume
		"watcher.example.yaml": "/run/" + systemdUnit(t)["RuntimeDirectory"][0],
		"kubernetes":           emptyDirMount(t, "kubernetes/statefulset.yaml"),
		"kubernetes-cluster":   emptyDirMount(t, "kubernetes-cluster/deployment.yaml"),
	}
	for name, listen := range configs {
		if listen == "" {
			t.Errorf("%s: admin.listen is not set; name it (loopback or unix:/PATH) so that it is seen", name)
			continue
		}
		if sock, ok := (config.Admin{Listen: listen}).Socket(); ok {
			if path.Dir(sock) != private[name] {
				t.Errorf("%s: admin.listen %s is not in %s", name, listen, private[name])
			}
			continue
		}
		if !config.IsLoopback(listen) {
			t.Errorf("%s: admin.listen %s can be reached from other hosts", name, listen)
		}
	}
}

// adminOfConfigMap returns admin.listen of the watcher.yaml a ConfigMap holds.
func adminOfConfigMap(t *testing.T, file string) string {
	t.Helper()
	for _, doc := range yamlDocs(t, file) {
		if str(doc, "kind") != "ConfigMap" {
			continue
		}
		var inner map[string]any
		if err := yaml.Unmarshal([]byte(str(doc, "data", "watcher.yaml")), &inner); err != nil {
			t.Fatalf("%s: watcher.yaml: %v", file, err)
		}
		return str(inner, "admin", "listen")
	}
	t.Fatalf("%s: no ConfigMap", file)
	return ""
}

// emptyDirMount returns the mount path of the watcher container's emptyDir volume
// in a workload manifest.
func emptyDirMount(t *testing.T, file string) string {
	t.Helper()
	for _, doc := range yamlDocs(t, file) {
		spec := get(doc, "spec", "template", "spec")
		if spec == nil {
			continue
		}
		empty := map[string]bool{}
		vols, _ := get(spec, "volumes").([]any)
		for _, v := range vols {
			if get(v, "emptyDir") != nil {
				empty[str(v, "name")] = true
			}
		}
		mounts, _ := get(spec, "containers", 0, "volumeMounts").([]any)
		for _, m := range mounts {
			if empty[str(m, "name")] {
				return strings.TrimSuffix(str(m, "mountPath"), "/")
			}
		}
	}
	t.Fatalf("%s: no emptyDir mounted in the container", file)
	return ""
}
