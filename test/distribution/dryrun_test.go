package distribution

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pgops/pgops/internal/dist"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// TestServerSideDryRun applies the chart's output and dist/install.yaml to a real API
// server with a server-side dry run: its schemas, strict field validation (a misspelt or
// misplaced field fails, say an affinity from values) and admission see every object,
// and nothing is created. The dry run of a namespaced object needs its namespace, and the
// CRDs go in for real too, as `helm install` installs crds/ before the templates.
func TestServerSideDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a local control plane")
	}
	needHelm(t)
	if err := localcluster.CheckBinaries(localcluster.DefaultBinDir()); err != nil {
		skipOrFail(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := localcluster.Options{}
	if testing.Verbose() {
		opts.Progress = os.Stderr
	}
	cluster, err := localcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, cluster.Stop()) })

	for _, ns := range []string{releaseNamespace, "pgops-other"} {
		_, err := cluster.CreateNamespace(ctx, ns)
		require.NoError(t, err)
	}
	out, err := cluster.Kubectl(ctx, "apply", "--server-side", "-f", testenv.Path(chartDir, "crds"))
	require.NoError(t, err, string(out))

	dryRun := func(t *testing.T, file string, wantObjects int) {
		t.Helper()
		out, err := cluster.Kubectl(ctx, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", file)
		require.NoError(t, err, string(out))
		assert.Equal(t, wantObjects, strings.Count(string(out), "(server dry run)"), "objects applied:\n%s", out)
	}
	writeFile := func(t *testing.T, content string) string {
		file := filepath.Join(t.TempDir(), "manifest.yaml")
		require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
		return file
	}

	t.Run("chart defaults", func(t *testing.T) {
		rendered := renderText(t, releaseNamespace, "--include-crds")
		dryRun(t, writeFile(t, rendered), len(parse(t, []byte(rendered))))
	})
	// Every value that reaches a pod spec, in another namespace than pgops-system.
	t.Run("chart values", func(t *testing.T) {
		rendered := renderText(t, "pgops-other", "--include-crds",
			"--set", "watchNamespace=foo", "--set", "leaderElection.enabled=false",
			"--set", "provisioner.replicas=1", "--set", "opsManager.replicas=1",
			"--set", "image.tag=v9.9.9", "--set", "image.pullPolicy=Always", "--set", "imagePullSecrets[0].name=registry",
			"--set", "provisioner.extraArgs[0]=--v=2", "--set", "opsManager.resources.requests.cpu=1",
			"--set", "metrics.service.port=9090", "--set", "provisioner.nodeSelector.pool=system",
			"--set-json", `opsManager.tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]`,
			"--set-json", `provisioner.affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/arch","operator":"In","values":["amd64"]}]}]}}}`)
		dryRun(t, writeFile(t, rendered), len(parse(t, []byte(rendered))))
	})
	t.Run("dist/install.yaml", func(t *testing.T) {
		dryRun(t, testenv.Path(dist.OutputPath), len(parse(t, readFile(t, dist.OutputPath))))
	})

	// A dry run creates nothing.
	for _, ns := range []string{releaseNamespace, "pgops-other"} {
		deployments, err := cluster.Client().AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		assert.Empty(t, deployments.Items, "Deployments in %s after the dry runs", ns)
	}
}
