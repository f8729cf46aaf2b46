// Package v1 holds pgops's Postgres API, a compatible subset of KubeDB's kubedb.com/v1.
//
// JSON field names follow KubeDB exactly, so manifests written for KubeDB's Postgres guides
// apply unchanged. Fields that pgops does not act on yet are accepted and ignored.
//
// +k8s:deepcopy-gen=package
// +groupName=kubedb.com
package v1
