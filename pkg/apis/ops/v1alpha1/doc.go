// Package v1alpha1 holds pgops's PostgresOpsRequest API, a compatible subset of KubeDB's
// ops.kubedb.com/v1alpha1.
//
// Only the operation types pgops implements are listed in the type enum, so the API server
// rejects the others with a clear message instead of accepting requests nobody will run.
//
// +k8s:deepcopy-gen=package
// +groupName=ops.kubedb.com
package v1alpha1
