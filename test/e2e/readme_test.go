package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/test/testenv"
)

// readmeSection returns the shell blocks of the README section under heading, joined.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(testenv.Path("README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n## "+heading+"\n")
	require.True(t, ok, "README has no section %q", heading)
	section, _, _ = strings.Cut(section, "\n## ")
	var script strings.Builder
	for {
		var block string
		_, rest, ok := strings.Cut(section, "```sh\n")
		if !ok {
			break
		}
		block, section, _ = strings.Cut(rest, "```\n")
		script.WriteString(block)
	}
	require.NotEmpty(t, script.String())
	return script.String()
}

// TestReadmeConnectionInstructions runs the README's "Connect to the demo database" as
// written, on the demo's database: the plugin, psql through the ClusterIP with the auth
// Secret's credential, kubectl exec, logs and port-forward.
func TestReadmeConnectionInstructions(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	// The README's namespace, as make demo makes it.
	_, err := env.cluster.CreateNamespaceWithLabels(ctx, "demo", restrictedNamespace)
	require.NoError(t, err)
	t.Cleanup(func() { deleteNamespace("demo") })
	applyExample(t, ctx, "demo", "10-postgres.yaml", nil)
	waitPostgresPhase(t, ctx, "demo", "ha-postgres", kubedbv1.DatabasePhaseReady)

	script := readmeSection(t, "Connect to the demo database")
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	// As the README's reader has it after pasting make demo's exports.
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+env.cluster.Kubeconfig,
		"PATH="+filepath.Dir(env.cluster.KubectlPath)+":"+filepath.Dir(env.binaries["kubectl-pgops"])+":"+os.Getenv("PATH"),
	)
	cmd.Stdin = nil // the interactive psql reads end of input and exits
	// Its own process group, so a background port-forward left by a failed line is ended.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	require.NoError(t, err, "the README's connection instructions:\n%s\noutput:\n%s", script, out.String())
	for _, want := range []string{
		"Phase:", // kubectl pgops status
		" f\n",   // psql through the ClusterIP and kubectl exec: the primary is not in recovery
		" LOG: ", // kubectl logs: the server's log
		"Forwarding from 127.0.0.1:15432",
	} {
		assert.Contains(t, out.String(), want)
	}
}
