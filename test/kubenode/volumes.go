package kubenode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// The volume provisioner gives each claim of the nodes' StorageClass a directory on the
// node its pod is scheduled to, as a local PersistentVolume bound to that node, the way
// rancher's local-path-provisioner (kind's default) does: binding waits for the first
// consumer, the scheduler names the node (annotation volume.kubernetes.io/selected-node),
// and a deleted claim's volume and directory go with it (reclaim policy Delete). The
// kubelet gives the directory to the pod's fsGroup, as it does for every local volume.

const (
	annSelectedNode       = "volume.kubernetes.io/selected-node"
	annStorageProvisioner = "volume.kubernetes.io/storage-provisioner"
	annProvisionedBy      = "pv.kubernetes.io/provisioned-by"
)

// volumeDir is where claim uid's data lives on node n.
func (n *Node) volumeDir(uid string) string { return n.path("volumes", "pvc-"+uid) }

// runVolumeProvisioner provisions and deletes volumes until ctx ends.
func runVolumeProvisioner(ctx context.Context, client kubernetes.Interface, ns *Nodes) {
	factory := informers.NewSharedInformerFactory(client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims()
	volumes := factory.Core().V1().PersistentVolumes()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := func(prefix string) func(obj any) {
		return func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				queue.Add(prefix + key)
			}
		}
	}
	_, _ = claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue("pvc/"), UpdateFunc: func(_, o any) { enqueue("pvc/")(o) },
	})
	_, _ = volumes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue("pv/"), UpdateFunc: func(_, o any) { enqueue("pv/")(o) },
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), claims.Informer().HasSynced, volumes.Informer().HasSynced) {
		return
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		key, quit := queue.Get()
		if quit {
			return
		}
		var err error
		switch {
		case len(key) > 4 && key[:4] == "pvc/":
			err = provision(ctx, client, ns, claims.Lister(), key[4:])
		case len(key) > 3 && key[:3] == "pv/":
			err = reclaim(ctx, client, ns, volumes.Lister(), key[3:])
		}
		if err != nil && ctx.Err() == nil {
			klog.V(2).InfoS("volume provisioner: retrying", "key", key, "err", err)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// provision creates the volume of a claim waiting for one on one of the nodes.
func provision(ctx context.Context, client kubernetes.Interface, ns *Nodes, lister corelisters.PersistentVolumeClaimLister, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := lister.PersistentVolumeClaims(namespace).Get(name)
	if err != nil {
		return nil // deleted
	}
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || pvc.Annotations[annStorageProvisioner] != VolumeProvisioner {
		return nil
	}
	node := ns.Node(pvc.Annotations[annSelectedNode])
	if node == nil {
		return nil // not scheduled yet, or to a node that is not ours
	}
	dir := node.volumeDir(string(pvc.UID))
	// The kubelet gives the directory to the pod's fsGroup when it mounts it.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mode := corev1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		mode = *pvc.Spec.VolumeMode
	}
	if mode != corev1.PersistentVolumeFilesystem {
		return fmt.Errorf("claim %s asks for volume mode %s; only Filesystem is provided", key, mode)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "pvc-" + string(pvc.UID),
			Annotations: map[string]string{annProvisionedBy: VolumeProvisioner},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              ptrDeref(pvc.Spec.StorageClassName),
			VolumeMode:                    &mode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node.Name},
				}}}},
			}},
		},
	}
	_, err = client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// reclaim deletes a released volume of ours and its directory.
func reclaim(ctx context.Context, client kubernetes.Interface, ns *Nodes, lister corelisters.PersistentVolumeLister, name string) error {
	pv, err := lister.Get(name)
	if err != nil {
		return nil
	}
	if pv.Annotations[annProvisionedBy] != VolumeProvisioner || pv.Status.Phase != corev1.VolumeReleased ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || pv.Spec.Local == nil {
		return nil
	}
	for _, n := range ns.Nodes {
		if filepath.Dir(pv.Spec.Local.Path) == n.path("volumes") {
			unmountUnder(pv.Spec.Local.Path)
			if err := os.RemoveAll(pv.Spec.Local.Path); err != nil {
				return err
			}
		}
	}
	err = client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &pv.UID},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func ptrDeref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
