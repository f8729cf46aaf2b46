package kubenode_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/test/kubenode"
)

// The nodes themselves are tested in test/e2e (nodes_test.go), on the e2e's nodes: a
// machine runs one kube-proxy, so a cluster of this package's own would wait for the e2e's.

// TestVersionsMatchHack keeps ContainerdVersion in step with hack/versions.sh, which names
// the directory hack/install-node.sh builds containerd into.
func TestVersionsMatchHack(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "hack", "versions.sh"))
	require.NoError(t, err)
	m := regexp.MustCompile(`CONTAINERD_VERSION="\$\{CONTAINERD_VERSION:-([^}]+)\}"`).FindSubmatch(b)
	require.NotNil(t, m, "CONTAINERD_VERSION not found in hack/versions.sh")
	require.Equal(t, kubenode.ContainerdVersion, string(m[1]))
}
