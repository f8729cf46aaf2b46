package localcluster

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// kwok manages only nodes carrying this annotation (see startKwok).
const (
	kwokNodeAnnotation      = "kwok.x-k8s.io/node"
	kwokNodeAnnotationValue = "fake"
)

// bootstrap creates what every test expects of a fresh cluster: the default
// StorageClass, a Ready node (unless Options.SkipFakeNode), and the default ServiceAccount of namespace default.
func (c *Cluster) bootstrap(ctx context.Context) error {
	if err := c.createStorageClass(ctx); err != nil {
		return err
	}
	if !c.opts.SkipFakeNode {
		if err := c.createNode(ctx); err != nil {
			return err
		}
		if err := c.waitNodeReady(ctx); err != nil {
			return err
		}
	}
	return c.WaitForServiceAccount(ctx, metav1.NamespaceDefault, "default")
}

// createStorageClass creates the default StorageClass "standard". Its provisioner is
// by default the one the volume stages of hack/kwok/stages.yaml act on, so its PVCs get
// a PV and turn Bound without any real storage; real nodes bring their own
// (Options.VolumeProvisioner).
func (c *Cluster) createStorageClass(ctx context.Context) error {
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       c.opts.VolumeProvisioner,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(c.opts.VolumeBindingMode),
	}
	_, err := c.client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create StorageClass %s: %w", StorageClassName, err)
	}
	return nil
}

// createNode registers the fake Node kwok will manage. It has no taints, and
// capacity generous enough that tests never hit it.
func (c *Cluster) createNode(ctx context.Context) error {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.NodeName,
			Annotations: map[string]string{kwokNodeAnnotation: kwokNodeAnnotationValue},
			Labels: map[string]string{
				"type":                   "kwok",
				"kubernetes.io/hostname": c.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
		Status: corev1.NodeStatus{Capacity: resources, Allocatable: resources},
	}
	if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Node %s: %w", c.NodeName, err)
	}
	return nil
}

// waitNodeReady waits until kwok has marked the node Ready.
func (c *Cluster) waitNodeReady(ctx context.Context) error {
	kw := c.procs[compKwok]
	return kw.WaitFor(ctx, "node "+c.NodeName+" Ready", func(ctx context.Context) (bool, error) {
		node, err := c.client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

// WaitForServiceAccount waits until the ServiceAccount exists. The controller-manager
// creates "default" in every namespace shortly after the namespace; until then the
// apiserver rejects pods that would run as it.
func (c *Cluster) WaitForServiceAccount(ctx context.Context, namespace, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("wait for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// CreateNamespace creates a namespace and waits for its default ServiceAccount, so
// pods can be created in it right away.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return c.CreateNamespaceWithLabels(ctx, name, nil)
}

// CreateNamespaceWithLabels is CreateNamespace with labels, for example Pod Security
// admission's pod-security.kubernetes.io/enforce.
func (c *Cluster) CreateNamespaceWithLabels(ctx context.Context, name string, labels map[string]string) (*corev1.Namespace, error) {
	ns, err := c.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	return ns, c.WaitForServiceAccount(ctx, name, "default")
}

// ServiceAccountConfig returns a client config that authenticates as the
// ServiceAccount namespace/name with a token minted by the TokenRequest API, so a
// controller under test runs with exactly the RBAC granted to it (for example by the
// manifests in manifests/) rather than as admin. The token is valid for an hour.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	tr := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(c.adminConfig)
	cfg.BearerToken = tr.Status.Token
	return cfg, nil
}
