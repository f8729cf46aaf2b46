package provisioner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// legacyConfigMap is the shell entrypoint's ConfigMap as earlier releases created it.
func legacyConfigMap(pg *kubedbv1.Postgres) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: legacyScriptsConfigMapName(pg), Namespace: pg.Namespace,
			Labels: ownedLabels(pg), OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Data: map[string]string{"entrypoint.sh": "#!/bin/bash\n"},
	}
}

// legacyPod is a ready pod of an earlier release's template: it runs the shell entrypoint
// from the ConfigMap.
func legacyPod(pg *kubedbv1.Postgres, ordinal int) *corev1.Pod {
	pod := readyPod(pg, ordinal, true)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: legacyScriptsVolume, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: legacyScriptsConfigMapName(pg)}}}})
	return pod
}

// An upgrade from the shell entrypoint: the StatefulSet gets the agent template at once
// (pods move at their next restart, OnDelete), and the entrypoint's ConfigMap stays as long
// as a pod mounts it, so a container restart of an old pod still finds its script.
func TestEntrypointConfigMapStaysUntilNoPodMountsIt(t *testing.T) {
	pg := newPG("x", withReplicas(2))
	f := newFixture(t, []*kubedbv1.Postgres{pg}, legacyConfigMap(pg), readyPod(pg, 0, true), legacyPod(pg, 1))
	require.NoError(t, f.sync("x"))
	require.Len(t, f.statefulSet("x").Spec.Template.Spec.InitContainers, 1, "the template runs the agent")
	assert.True(t, f.exists("configmap", "x-scripts"), "x-1 still mounts it")

	// x-1 is restarted (a rotation, a pod deletion) and comes back on the agent template.
	require.NoError(t, f.kube.CoreV1().Pods(testNS).Delete(f.ctx, "x-1", metav1.DeleteOptions{}))
	_, err := f.kube.CoreV1().Pods(testNS).Create(f.ctx, readyPod(pg, 1, true), metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("configmap", "x-scripts"), "no pod needs the entrypoint any more")
	assert.Contains(t, f.kubeWrites(), "delete configmaps x-scripts")
	f.refresh()
	requireQuiet(t, f)
}

// A ConfigMap of that name that this Postgres does not control is somebody's: kept.
func TestEntrypointConfigMapOfSomebodyElseIsKept(t *testing.T) {
	pg := newPG("x")
	cm := legacyConfigMap(pg)
	cm.OwnerReferences = nil
	f := newFixture(t, []*kubedbv1.Postgres{pg}, cm, readyPod(pg, 0, true))
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("configmap", "x-scripts"))
}

// While the StatefulSet controller has not seen the agent template, it may still create a
// pod from the old one: the ConfigMap stays.
func TestEntrypointConfigMapStaysUntilTheTemplateIsObserved(t *testing.T) {
	pg := newPG("x")
	f := newFixture(t, []*kubedbv1.Postgres{pg}, legacyConfigMap(pg), readyPod(pg, 0, true))
	require.NoError(t, f.sync("x"))
	f.refresh()
	sts := f.statefulSet("x") // as if a template update were not yet observed
	sts.Generation, sts.Status.ObservedGeneration = 2, 1
	_, err := f.kube.AppsV1().StatefulSets(testNS).Update(f.ctx, sts, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.False(t, f.exists("configmap", "x-scripts"), "no pod mounted it")
	_, err = f.kube.CoreV1().ConfigMaps(testNS).Create(f.ctx, legacyConfigMap(pg), metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("configmap", "x-scripts"))
}
