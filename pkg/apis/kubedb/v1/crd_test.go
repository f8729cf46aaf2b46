package v1_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// TestEveryCRDFieldHasADescription: kubectl explain tells what every field does, and the
// fields pgops accepts for KubeDB compatibility without acting on them say so.
func TestEveryCRDFieldHasADescription(t *testing.T) {
	files, err := filepath.Glob("../../../../manifests/crds/*.yaml")
	require.NoError(t, err)
	require.Len(t, files, 2)
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		var crd map[string]any
		require.NoError(t, yaml.Unmarshal(data, &crd))
		for _, v := range crd["spec"].(map[string]any)["versions"].([]any) {
			schema := v.(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
			var missing, ignored []string
			walkSchema(schema, "", func(path string, s map[string]any) {
				desc, _ := s["description"].(string)
				switch {
				case path == ".metadata": // the API server's ObjectMeta
				case strings.TrimSpace(desc) == "":
					missing = append(missing, path)
				case strings.Contains(strings.Join(strings.Fields(desc), " "), "and ignored"):
					ignored = append(ignored, path)
				}
			})
			assert.Empty(t, missing, "%s: fields without a description", filepath.Base(file))
			t.Logf("%s: accepted and ignored: %s", filepath.Base(file), strings.Join(ignored, " "))
		}
	}
}

func TestIgnoredKubeDBFieldsSayTheyAreIgnored(t *testing.T) {
	data, err := os.ReadFile("../../../../manifests/crds/kubedb.com_postgreses.yaml")
	require.NoError(t, err)
	var crd map[string]any
	require.NoError(t, yaml.Unmarshal(data, &crd))
	schema := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
	spec := schema["properties"].(map[string]any)["spec"].(map[string]any)["properties"].(map[string]any)
	var names []string
	for _, name := range []string{"leaderElection", "init", "monitor", "configSecret", "configuration", "tls", "healthChecker", "allowedSchemas", "replication", "clientAuthMode", "sslMode"} {
		desc := strings.Join(strings.Fields(spec[name].(map[string]any)["description"].(string)), " ")
		assert.Contains(t, desc, "compatibility with KubeDB", name)
		names = append(names, name)
	}
	sort.Strings(names)
	readme, err := os.ReadFile("../../../../README.md")
	require.NoError(t, err)
	for _, name := range names {
		assert.Contains(t, string(readme), "`"+name+"`", "the README lists %s among the fields pgops ignores", name)
	}
}

func walkSchema(s map[string]any, path string, visit func(string, map[string]any)) {
	props, _ := s["properties"].(map[string]any)
	for name, p := range props {
		child := p.(map[string]any)
		visit(path+"."+name, child)
		walkSchema(child, path+"."+name, visit)
	}
	if items, ok := s["items"].(map[string]any); ok {
		walkSchema(items, path+"[]", visit)
	}
	if add, ok := s["additionalProperties"].(map[string]any); ok {
		walkSchema(add, path+"{}", visit)
	}
}
