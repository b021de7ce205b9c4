// Package kubecheck checks watcher's Kubernetes manifests (deploy/kubernetes and
// deploy/kubernetes-cluster) offline, with the Kubernetes project's own libraries:
// each kustomization is built in-process (kustomize's krusty), every object is
// decoded strictly into its API type so an unknown or misspelt field fails, every
// pod template is evaluated against Pod Security "restricted" (the
// pod-security-admission library the API server runs), and every Secret and
// ConfigMap a pod reads must be one the kustomization provides.
//
// It is a module of its own so that these libraries stay out of the daemon's
// go.mod; its tests are all it has. Run them with: cd deploy/kubecheck && go test ./...
package kubecheck
