package distribution

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// The release the chart is compared with manifests/ as: the README's
// `helm install pgops charts/pgops -n pgops-system --create-namespace`.
const (
	releaseName      = "pgops"
	releaseNamespace = "pgops-system"
)

// helmLabelKeys are the labels helm's chart adds to every templated object on top of the
// manifests' own; the comparison with manifests/ removes them.
var helmLabelKeys = []string{"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

var findHelm = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("PGOPS_HELM"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("PGOPS_HELM=%s is not an executable", p)
		}
		return p, nil
	}
	cached := filepath.Join(localcluster.CacheDir(), "bin", "helm")
	if fi, err := os.Stat(cached); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return cached, nil
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("helm not found in $PGOPS_HELM, %s or PATH; run hack/install-helm.sh (or make tools) to build it", cached)
})

// needHelm returns the helm binary, skipping the test without one (failing it under
// PGOPS_REQUIRE_LOCALCLUSTER).
func needHelm(t *testing.T) string {
	t.Helper()
	helm, err := findHelm()
	if err != nil {
		skipOrFail(t, err)
	}
	return helm
}

// runHelm runs helm in the repository root with its config, cache and data in a fresh
// directory (nothing of the user's repositories or plugins leaks in) and returns stdout.
func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(needHelm(t), args...)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w: %s%s", strings.Join(args, " "), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// renderText is `helm template` of the chart as release pgops in namespace, with args
// (--set ...) added.
func renderText(t *testing.T, namespace string, args ...string) string {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", releaseName, chartDir, "--namespace", namespace}, args...)...)
	require.NoError(t, err)
	return string(out)
}

// render is renderText parsed, CRDs included, and indexed by keyOf.
func render(t *testing.T, namespace string, args ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	return byKey(t, parse(t, []byte(renderText(t, namespace, append([]string{"--include-crds"}, args...)...))))
}

// withoutHelmLabels checks that every templated object, and the pods of a Deployment,
// carry helm's labels with the chart's values, and returns a copy without them.
func withoutHelmLabels(t *testing.T, o *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	meta := chartMeta(t)
	want := map[string]string{
		"helm.sh/chart":                meta.Name + "-" + meta.Version,
		"app.kubernetes.io/instance":   releaseName,
		"app.kubernetes.io/managed-by": "Helm",
		"app.kubernetes.io/version":    meta.AppVersion,
	}
	o = o.DeepCopy()
	strip := func(path ...string) {
		labels, _, err := unstructured.NestedStringMap(o.Object, path...)
		require.NoError(t, err)
		for _, k := range helmLabelKeys {
			assert.Equal(t, want[k], labels[k], "%s: label %s at %s", keyOf(o), k, strings.Join(path, "."))
			delete(labels, k)
		}
		if len(labels) == 0 {
			// The manifests' ServiceAccounts and RBAC have no labels of their own.
			unstructured.RemoveNestedField(o.Object, path...)
			return
		}
		require.NoError(t, unstructured.SetNestedStringMap(o.Object, labels, path...))
	}
	// helm installs crds/ as they are, without its labels.
	if o.GetKind() != "CustomResourceDefinition" {
		strip("metadata", "labels")
	}
	if o.GetKind() == "Deployment" {
		strip("spec", "template", "metadata", "labels")
	}
	return o
}

func TestHelmLint(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--set", "serviceMonitor.enabled=true", "--set", "watchNamespace=foo"},
		{"--set", "leaderElection.enabled=false", "--set", "provisioner.replicas=1", "--set", "opsManager.replicas=1"},
	} {
		out, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, args...)...)
		assert.NoError(t, err, "helm lint --strict %s %s:\n%s", chartDir, strings.Join(args, " "), out)
	}
}

// TestChartDefaultsAreManifests: with default values the chart renders the objects of
// manifests/ (but the Namespace, which `helm install --create-namespace` makes), equal
// once helm's labels are removed: same names, namespaces, selectors and specs.
func TestChartDefaultsAreManifests(t *testing.T) {
	manifests := map[string]*unstructured.Unstructured{}
	for k, o := range byKey(t, manifestObjects(t)) {
		if o.GetKind() != "Namespace" {
			manifests[k] = o
		}
	}
	chart := render(t, releaseNamespace)
	require.Equal(t, sortedKeys(manifests), sortedKeys(chart), "objects rendered by the chart vs manifests/")
	for k, want := range manifests {
		assert.Equal(t, want.Object, withoutHelmLabels(t, chart[k]).Object, "%s: chart vs manifests/", k)
	}
}

// TestChartRBACCommentsAreManifests: the ClusterRoles' rules keep the manifests' text,
// comments included: they are the RBAC's documentation.
func TestChartRBACCommentsAreManifests(t *testing.T) {
	chart := renderText(t, releaseNamespace)
	for _, operator := range []string{"provisioner", "ops-manager"} {
		manifest := string(readFile(t, "manifests/rbac/"+operator+".yaml"))
		assert.Equal(t, rulesBlock(t, manifest, "pgops-"+operator), rulesBlock(t, chart, "pgops-"+operator),
			"ClusterRole pgops-%s's rules and comments: chart vs manifests/rbac/%s.yaml", operator, operator)
	}
}

// TestChartValues renders the chart with values set and checks that they change exactly
// what they should, relative to the default render.
func TestChartValues(t *testing.T) {
	defaults := render(t, releaseNamespace)
	deployments := []string{"apps/v1/Deployment pgops-system/pgops-provisioner", "apps/v1/Deployment pgops-system/pgops-ops-manager"}
	for _, tc := range []struct {
		name string
		args []string
		// edit turns a copy of the default render into the expected one.
		edit func(t *testing.T, objs map[string]*unstructured.Unstructured)
	}{{
		name: "watchNamespace",
		args: []string{"--set", "watchNamespace=foo"},
		// Only the flag: the RBAC stays cluster-wide (values.yaml says why).
		edit: func(t *testing.T, objs map[string]*unstructured.Unstructured) {
			for _, d := range deployments {
				editContainer(t, objs[d], func(c map[string]any) { c["args"] = append(c["args"].([]any), "--namespace=foo") })
			}
		},
	}, {
		name: "leaderElection off",
		args: []string{"--set", "leaderElection.enabled=false", "--set", "provisioner.replicas=1", "--set", "opsManager.replicas=1"},
		// No Lease Roles, one replica each, the flag off.
		edit: func(t *testing.T, objs map[string]*unstructured.Unstructured) {
			for _, operator := range []string{"provisioner", "ops-manager"} {
				delete(objs, "rbac.authorization.k8s.io/v1/Role pgops-system/pgops-"+operator+"-leader-election")
				delete(objs, "rbac.authorization.k8s.io/v1/RoleBinding pgops-system/pgops-"+operator+"-leader-election")
			}
			for _, d := range deployments {
				require.NoError(t, unstructured.SetNestedField(objs[d].Object, int64(1), "spec", "replicas"))
				editContainer(t, objs[d], func(c map[string]any) { replaceArg(t, c, "--leader-elect=true", "--leader-elect=false") })
			}
		},
	}, {
		name: "metrics Services off",
		args: []string{"--set", "metrics.service.enabled=false"},
		edit: func(t *testing.T, objs map[string]*unstructured.Unstructured) {
			delete(objs, "v1/Service pgops-system/pgops-provisioner-metrics")
			delete(objs, "v1/Service pgops-system/pgops-ops-manager-metrics")
		},
	}, {
		name: "serviceMonitor",
		args: []string{"--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.interval=15s",
			"--set", "serviceMonitor.labels.release=prometheus", "--set", "metrics.service.port=9090"},
		edit: func(t *testing.T, objs map[string]*unstructured.Unstructured) {
			for _, svc := range []string{"v1/Service pgops-system/pgops-provisioner-metrics", "v1/Service pgops-system/pgops-ops-manager-metrics"} {
				ports, _, _ := unstructured.NestedSlice(objs[svc].Object, "spec", "ports")
				ports[0].(map[string]any)["port"] = int64(9090)
				require.NoError(t, unstructured.SetNestedSlice(objs[svc].Object, ports, "spec", "ports"))
			}
			objs["monitoring.coreos.com/v1/ServiceMonitor pgops-system/pgops"] = &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "monitoring.coreos.com/v1",
				"kind":       "ServiceMonitor",
				"metadata": map[string]any{
					"name":      "pgops",
					"namespace": "pgops-system",
					"labels": map[string]any{
						"app.kubernetes.io/part-of":   "pgops",
						"app.kubernetes.io/component": "metrics",
						"release":                     "prometheus",
					},
				},
				"spec": map[string]any{
					"namespaceSelector": map[string]any{"matchNames": []any{"pgops-system"}},
					// The labels both metrics Services carry in manifests/.
					"selector": map[string]any{"matchLabels": map[string]any{
						"app.kubernetes.io/part-of":   "pgops",
						"app.kubernetes.io/component": "metrics",
					}},
					"endpoints": []any{map[string]any{"port": "metrics", "path": "/metrics", "interval": "15s"}},
				},
			}}
		},
	}, {
		name: "image, pods and scheduling",
		args: []string{
			"--set", "image.repository=registry.example.com/pgops", "--set", "image.tag=v9.9.9", "--set", "image.pullPolicy=Always",
			"--set", "imagePullSecrets[0].name=registry",
			"--set", "provisioner.workers=16", "--set", "opsManager.replicas=3",
			"--set", "provisioner.extraArgs[0]=--image-registry=registry.example.com/postgres", "--set", "provisioner.extraArgs[1]=--v=2",
			"--set", "opsManager.resources.requests.cpu=1",
			"--set", "provisioner.nodeSelector.pool=system",
			"--set-json", `opsManager.tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]`,
			"--set-json", `provisioner.affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/arch","operator":"In","values":["amd64"]}]}]}}}`,
		},
		edit: func(t *testing.T, objs map[string]*unstructured.Unstructured) {
			for _, d := range deployments {
				require.NoError(t, unstructured.SetNestedSlice(objs[d].Object, []any{map[string]any{"name": "registry"}}, "spec", "template", "spec", "imagePullSecrets"))
				editContainer(t, objs[d], func(c map[string]any) {
					c["image"] = "registry.example.com/pgops:v9.9.9"
					c["imagePullPolicy"] = "Always"
				})
			}
			provisioner, opsManager := objs[deployments[0]], objs[deployments[1]]
			editContainer(t, provisioner, func(c map[string]any) {
				replaceArg(t, c, "--workers=4", "--workers=16")
				// The pods' agent comes from the operators' own image.
				replaceArg(t, c, "--agent-image=ghcr.io/pgops/pgops:v0.1.0", "--agent-image=registry.example.com/pgops:v9.9.9")
				c["args"] = append(c["args"].([]any), "--image-registry=registry.example.com/postgres", "--v=2")
			})
			require.NoError(t, unstructured.SetNestedStringMap(provisioner.Object, map[string]string{"pool": "system"}, "spec", "template", "spec", "nodeSelector"))
			require.NoError(t, unstructured.SetNestedField(provisioner.Object, map[string]any{"nodeAffinity": map[string]any{
				"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{map[string]any{
					"matchExpressions": []any{map[string]any{"key": "kubernetes.io/arch", "operator": "In", "values": []any{"amd64"}}},
				}}},
			}}, "spec", "template", "spec", "affinity"))
			require.NoError(t, unstructured.SetNestedField(opsManager.Object, int64(3), "spec", "replicas"))
			editContainer(t, opsManager, func(c map[string]any) {
				c["resources"].(map[string]any)["requests"].(map[string]any)["cpu"] = int64(1)
			})
			require.NoError(t, unstructured.SetNestedSlice(opsManager.Object, []any{
				map[string]any{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
			}, "spec", "template", "spec", "tolerations"))
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]*unstructured.Unstructured{}
			for k, o := range defaults {
				want[k] = withoutHelmLabels(t, o)
			}
			tc.edit(t, want)
			got := render(t, releaseNamespace, tc.args...)
			require.Equal(t, sortedKeys(want), sortedKeys(got), "objects rendered")
			for k, o := range got {
				assert.Equal(t, want[k].Object, withoutHelmLabels(t, o).Object, k)
			}
		})
	}
}

// TestChartReleaseNamespace: the release namespace replaces pgops-system everywhere,
// the ServiceAccounts the ClusterRoleBindings name included.
func TestChartReleaseNamespace(t *testing.T) {
	defaults := render(t, releaseNamespace)
	other := render(t, "pgops-other")
	require.Len(t, other, len(defaults))
	for _, o := range defaults {
		want := o.DeepCopy()
		if want.GetNamespace() != "" {
			want.SetNamespace("pgops-other")
		}
		if subjects, ok, _ := unstructured.NestedSlice(want.Object, "subjects"); ok {
			for _, s := range subjects {
				s.(map[string]any)["namespace"] = "pgops-other"
			}
			require.NoError(t, unstructured.SetNestedSlice(want.Object, subjects, "subjects"))
		}
		got, ok := other[keyOf(want)]
		if assert.True(t, ok, "%s not rendered in namespace pgops-other", keyOf(want)) {
			assert.Equal(t, want.Object, got.Object, keyOf(want))
		}
	}
	assert.NotContains(t, renderText(t, "pgops-other", "--set", "serviceMonitor.enabled=true"), "pgops-system")
}

// TestChartRefusesUnsafeValues: values that cannot work fail the render with a message
// that says what to change.
func TestChartRefusesUnsafeValues(t *testing.T) {
	for args, want := range map[string]string{
		// Two replicas that both act would fight over every object.
		"leaderElection.enabled=false":                              "provisioner.replicas is 2, but leaderElection.enabled is false",
		"leaderElection.enabled=false,provisioner.replicas=1":       "opsManager.replicas is 2, but leaderElection.enabled is false",
		"serviceMonitor.enabled=true,metrics.service.enabled=false": "serviceMonitor.enabled needs metrics.service.enabled",
	} {
		_, err := runHelm(t, "template", releaseName, chartDir, "--namespace", releaseNamespace, "--set", args)
		if assert.Error(t, err, args) {
			assert.Contains(t, err.Error(), want, args)
		}
	}
}

// editContainer edits the only container of a Deployment's pods.
func editContainer(t *testing.T, d *unstructured.Unstructured, edit func(c map[string]any)) {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	require.NoError(t, err)
	require.Len(t, containers, 1, keyOf(d))
	edit(containers[0].(map[string]any))
	require.NoError(t, unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers"))
}

func replaceArg(t *testing.T, c map[string]any, old, new string) {
	t.Helper()
	args := c["args"].([]any)
	for i, a := range args {
		if a == old {
			args[i] = new
			return
		}
	}
	t.Fatalf("container %v has no argument %s: %v", c["name"], old, args)
}
