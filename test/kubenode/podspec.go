package kubenode

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Helpers for tests that run pods of their own on the nodes.

// Restricted returns container c with a security context Pod Security "restricted" admits
// (a read-only root, no capabilities, no privilege escalation), its image never pulled.
func Restricted(c corev1.Container) corev1.Container {
	c.SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	c.ImagePullPolicy = corev1.PullIfNotPresent
	return c
}

// PostgresUser is a pod security context Pod Security "restricted" admits, as the
// PostgreSQL image's postgres user (uid and gid 999).
func PostgresUser() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](999), FSGroup: ptr.To[int64](999),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// WaitPod polls pod ns/name until ok says yes, for up to timeout, and returns it.
func WaitPod(ctx context.Context, kube kubernetes.Interface, ns, name string, timeout time.Duration, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return ok(p), nil
	})
	if err != nil {
		return pod, fmt.Errorf("pod %s/%s: %w; last seen: %+v", ns, name, err, pod)
	}
	return pod, nil
}
