package dist_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgops/pgops/internal/dist"
)

// writeManifests makes a manifests directory with one ConfigMap and the given
// kustomization.
func writeManifests(t *testing.T, kustomization string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"kustomization.yaml": kustomization,
		"cm.yaml":            "---\n# a comment that stays\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
		"sub/empty.yaml":     "# only a comment\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const kustomizationHead = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"

func TestRenderKeepsOrderAndComments(t *testing.T) {
	dir := writeManifests(t, kustomizationHead+"resources:\n- cm.yaml\n")
	out, err := dist.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := dist.Header + "---\n# Source: manifests/cm.yaml\n# a comment that stays\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
	if string(out) != want {
		t.Errorf("Render:\n%s\nwant:\n%s", out, want)
	}
}

// TestRefusesWhatKustomizeWouldChange: anything kustomize would do beyond concatenating
// resources must fail, never be dropped.
func TestRefusesWhatKustomizeWouldChange(t *testing.T) {
	for name, tc := range map[string]struct{ kustomization, wantErr string }{
		"other field":      {kustomizationHead + "namePrefix: x-\nresources:\n- cm.yaml\n", "namePrefix not supported"},
		"images":           {kustomizationHead + "images:\n- name: a\n  newTag: b\nresources:\n- cm.yaml\n", "images not supported"},
		"directory":        {kustomizationHead + "resources:\n- sub\n", "must be a relative path to a .yaml file"},
		"outside":          {kustomizationHead + "resources:\n- ../cm.yaml\n", "must be a relative path"},
		"url":              {kustomizationHead + "resources:\n- https://example.com/a.yaml\n", "must be a relative path"},
		"missing":          {kustomizationHead + "resources:\n- nope.yaml\n", "nope.yaml"},
		"no object":        {kustomizationHead + "resources:\n- sub/empty.yaml\n", "holds no object"},
		"no resources":     {kustomizationHead, "non-empty list"},
		"not kustomize v1": {"apiVersion: v2\nkind: Kustomization\nresources:\n- cm.yaml\n", "want apiVersion"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := dist.Render(writeManifests(t, tc.kustomization))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Render: error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseObjectsNeedsKindAndName(t *testing.T) {
	objs, err := dist.ParseObjects([]byte("---\n# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"))
	if err != nil || len(objs) != 1 || objs[0].GetName() != "a" {
		t.Fatalf("ParseObjects: %v, %v", objs, err)
	}
	if _, err := dist.ParseObjects([]byte("apiVersion: v1\nkind: ConfigMap\n")); err == nil {
		t.Error("ParseObjects accepted an object without a name")
	}
}
