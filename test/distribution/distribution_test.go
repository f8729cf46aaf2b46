// Package distribution checks the three ways pgops is installed against each other, so none
// drifts from the others: manifests/ (`kubectl apply -k`), dist/install.yaml (`make dist`)
// and the Helm chart charts/pgops. It also applies what they install to a real API server
// with a server-side dry run.
//
// helm comes from $PGOPS_HELM, the cache hack/install-helm.sh builds into, or PATH; with
// PGOPS_REQUIRE_LOCALCLUSTER=1 (make test) a missing helm or control plane fails the tests
// instead of skipping them.
package distribution

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/pgops/pgops/internal/dist"
	"github.com/pgops/pgops/internal/imagebuild"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

const chartDir = "charts/pgops"

// required: make test sets PGOPS_REQUIRE_LOCALCLUSTER=1 so a missing tool fails the run
// rather than silently skipping the tests that need it.
var required = os.Getenv("PGOPS_REQUIRE_LOCALCLUSTER") != ""

// skipOrFail skips the test for want of a tool, or fails it when tools are required.
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if required {
		t.Fatal(err)
	}
	t.Skip(err)
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Path(rel))
	require.NoError(t, err)
	return b
}

// TestDistIsCurrent: the committed dist/install.yaml is what make dist writes now.
func TestDistIsCurrent(t *testing.T) {
	want, err := dist.Render(testenv.Path(dist.ManifestsDir))
	require.NoError(t, err)
	got := readFile(t, dist.OutputPath)
	if !bytes.Equal(got, want) {
		line := 1 + bytes.Count(want[:commonPrefix(got, want)], []byte("\n"))
		t.Fatalf("%s is not current (first difference on line %d): run make dist", dist.OutputPath, line)
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestDistIsKustomize: dist/install.yaml holds the objects `kubectl kustomize manifests/`
// builds, so the single file and `kubectl apply -k` install the same. (kustomize sorts them
// by kind; the file keeps the kustomization's order, and kubectl apply handles either.)
func TestDistIsKustomize(t *testing.T) {
	kubectl := filepath.Join(localcluster.DefaultBinDir(), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		skipOrFail(t, localcluster.CheckBinaries(localcluster.DefaultBinDir()))
	}
	out, err := exec.Command(kubectl, "kustomize", testenv.Path(dist.ManifestsDir)).Output()
	require.NoError(t, err, "kubectl kustomize manifests/")
	kustomized := byKey(t, parse(t, out))
	distributed := byKey(t, parse(t, readFile(t, dist.OutputPath)))
	require.Equal(t, sortedKeys(kustomized), sortedKeys(distributed), "objects")
	for k, o := range kustomized {
		assert.Equal(t, o.Object, distributed[k].Object, k)
	}
}

// TestChartCRDsAreManifests: charts/pgops/crds holds exactly manifests/crds, byte for byte
// (helm installs crds/ as they are; make generate writes both).
func TestChartCRDsAreManifests(t *testing.T) {
	names := func(dir string) []string {
		entries, err := os.ReadDir(testenv.Path(dir))
		require.NoError(t, err)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	manifestCRDs := names("manifests/crds")
	require.NotEmpty(t, manifestCRDs)
	require.Equal(t, manifestCRDs, names(chartDir+"/crds"), "files in %s/crds", chartDir)
	for _, name := range manifestCRDs {
		if !bytes.Equal(readFile(t, "manifests/crds/"+name), readFile(t, chartDir+"/crds/"+name)) {
			t.Errorf("%s/crds/%s differs from manifests/crds/%s: run make generate (it copies manifests/crds into the chart)", chartDir, name, name)
		}
	}
}

// TestChartAppVersionIsImageTag: a release bumps hack/image-tag, the manifests' images and
// the chart's appVersion (its default image tag) together.
func TestChartAppVersionIsImageTag(t *testing.T) {
	tag, err := imagebuild.ReadTag(testenv.RepoRoot())
	require.NoError(t, err)
	assert.Equal(t, tag, chartMeta(t).AppVersion, "%s/Chart.yaml appVersion vs hack/image-tag", chartDir)
}

// TestAgentImageIsTheOperatorImage: the database pods install the agent from the operator
// image of the same release, by default and in manifests/.
func TestAgentImageIsTheOperatorImage(t *testing.T) {
	ref, err := imagebuild.Reference(testenv.RepoRoot())
	require.NoError(t, err)
	assert.Equal(t, ref, provisioner.DefaultAgentImage, "the provisioner's --agent-image default vs hack/image-tag")
	found := false
	for _, obj := range manifestObjects(t) {
		if obj.GetKind() != "Deployment" || obj.GetName() != "pgops-provisioner" {
			continue
		}
		containers, _, err := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
		require.NoError(t, err)
		c := containers[0].(map[string]any)
		assert.Equal(t, ref, c["image"])
		assert.Contains(t, c["args"], "--agent-image="+ref)
		found = true
	}
	assert.True(t, found, "manifests/ has the provisioner's Deployment")
}

type chartYAML struct {
	APIVersion string `json:"apiVersion"`
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func chartMeta(t *testing.T) chartYAML {
	t.Helper()
	var c chartYAML
	require.NoError(t, yaml.Unmarshal(readFile(t, chartDir+"/Chart.yaml"), &c))
	return c
}

// manifestObjects returns the objects of manifests/, in the kustomization's order.
func manifestObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	resources, err := dist.Resources(testenv.Path(dist.ManifestsDir))
	require.NoError(t, err)
	var objs []*unstructured.Unstructured
	for _, rel := range resources {
		objs = append(objs, parse(t, readFile(t, dist.ManifestsDir+"/"+rel))...)
	}
	return objs
}

func parse(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := dist.ParseObjects(data)
	require.NoError(t, err)
	return objs
}

// keyOf names an object as kubectl would, with its namespace.
func keyOf(o *unstructured.Unstructured) string {
	return o.GetAPIVersion() + "/" + o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, keyOf(o))
	}
	return out
}

// byKey indexes objects by keyOf, failing on duplicates.
func byKey(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		k := keyOf(o)
		require.NotContains(t, m, k, "rendered twice")
		m[k] = o
	}
	return m
}

func sortedKeys(m map[string]*unstructured.Unstructured) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rulesBlock returns the text from a ClusterRole's "rules:" line to the end of its
// document: the rules with their comments.
func rulesBlock(t *testing.T, text, clusterRole string) string {
	t.Helper()
	for _, doc := range strings.Split(text, "\n---\n") {
		if !strings.Contains(doc, "\nkind: ClusterRole\n") || !strings.Contains(doc, "\n  name: "+clusterRole+"\n") {
			continue
		}
		i := strings.Index(doc, "\nrules:\n")
		require.GreaterOrEqual(t, i, 0, "ClusterRole %s has no rules", clusterRole)
		return strings.TrimRight(doc[i+1:], "\n")
	}
	t.Fatalf("no ClusterRole %s", clusterRole)
	return ""
}
