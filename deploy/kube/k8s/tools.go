//go:build tools

// Package k8s pins the Kubernetes release whose binaries deploy/kube builds:
// `go build` of these commands from the Go module proxy, with the staging
// repositories (k8s.io/api, client-go, ...) replaced by the same release,
// since k8s.io/kubernetes requires them at v0.0.0.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
