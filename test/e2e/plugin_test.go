package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/pgtest"
)

// kubectlPgops runs the plugin binary as a user would, with the admin kubeconfig, and
// returns what it printed and its exit code.
func kubectlPgops(t testing.TB, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, env.binaries["kubectl-pgops"], append([]string{"--kubeconfig", env.cluster.Kubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("kubectl pgops %s:\n%s", strings.Join(args, " "), out.String())
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), exit.ExitCode()
	}
	require.NoError(t, err, out.String())
	return out.String(), 0
}

// TestKubectlPgopsPlugin: status shows the standby streaming, rotate-auth --wait prints the
// steps and exits 0 on success and 1 on a refused request, and psql runs a query with the
// auth Secret's credential, which nothing prints.
func TestKubectlPgopsPlugin(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "db", 2)
	waitPostgresPhase(t, ctx, ns, "db", kubedbv1.DatabasePhaseReady)
	before := authCredential(t, ctx, ns, "db")
	watchForLeaks(t, before.password)

	t.Run("status", func(t *testing.T) {
		var out string
		poll(t, ctx, "status shows db-1 streaming", func(ctx context.Context) (bool, error) {
			var code int
			out, code = kubectlPgops(t, ctx, "status", "db", "-n", ns)
			require.Equal(t, 0, code, out)
			return bytes.Contains([]byte(out), []byte("streaming")), nil
		}, func() string { return out })
		for _, want := range []string{"Phase:", "Ready", "db-0", "primary", "db-1", "standby", "streaming", "async",
			"read from the primary through port-forward to pod db-0", "Auth Secret:", "db-auth"} {
			assert.Contains(t, out, want)
		}
		assert.NotContains(t, out, before.password)
	})

	t.Run("status --connect service", func(t *testing.T) {
		// By default (above) the plugin port-forwards through the API server and the
		// primary's kubelet, as from a laptop outside the cluster network; the Service is
		// reachable here too, since the API server runs on this machine.
		out, code := kubectlPgops(t, ctx, "status", "db", "-n", ns, "--connect", "service")
		require.Equal(t, 0, code, out)
		assert.Contains(t, out, "read from the primary through Service db")
		assert.Contains(t, out, "streaming")
		assert.NotContains(t, out, before.password)
	})

	t.Run("rotate-auth --wait succeeds", func(t *testing.T) {
		out, code := kubectlPgops(t, ctx, "rotate-auth", "db", "-n", ns, "--restart", "StandbysOnly", "--wait")
		require.Equal(t, 0, code, out)
		for _, want := range []string{"created", "PauseDatabase", "UpdateCredential", "RestartNodes", "ResumeDatabase", "Successful in"} {
			assert.Contains(t, out, want)
		}
		after := authCredential(t, ctx, ns, "db")
		assert.NotEqual(t, before.password, after.password)
		watchForLeaks(t, after.password)
		assert.NotContains(t, out, after.password)
	})

	t.Run("rotate-auth --wait fails on a refused request", func(t *testing.T) {
		kubectlApply(t, ctx, fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: no-password, namespace: %s}\nstringData: {username: postgres}\n", ns))
		out, code := kubectlPgops(t, ctx, "rotate-auth", "db", "-n", ns, "--secret", "no-password", "--wait")
		require.Equal(t, 1, code, out)
		assert.Contains(t, out, "Failed in")
		assert.Contains(t, out, `InvalidSecret: Secret `+ns+`/no-password has no "password"`)
		assert.Contains(t, out, "kubectl describe pgops -n "+ns)

		out, code = kubectlPgops(t, ctx, "rotate-auth", "no-such-db", "-n", ns, "--wait")
		require.Equal(t, 1, code, out)
		assert.Contains(t, out, `postgres "no-such-db" not found`)
	})

	t.Run("metrics", func(t *testing.T) {
		// Both operators serve what the alert rules in docs/monitoring use.
		env.mu.Lock()
		opsManager, provisioner := env.opsManager.MetricsAddr, env.provisioner.MetricsAddr
		env.mu.Unlock()
		assert.Contains(t, scrape(t, opsManager), `pgops_opsrequest_duration_seconds_count{phase="Successful",type="RotateAuth"}`)
		assert.Contains(t, scrape(t, opsManager), `pgops_opsrequests_ended_total{phase="Failed",type="RotateAuth"}`)
		// The rotation restarted the standby: the phase is Critical until the provisioner's
		// next check, and the gauge follows its cache.
		waitPostgresPhase(t, ctx, ns, "db", kubedbv1.DatabasePhaseReady)
		ready := `pgops_postgres_phase{name="db",namespace="` + ns + `",phase="Ready"} 1`
		var metrics string
		poll(t, ctx, "the provisioner's metrics to show db Ready", func(context.Context) (bool, error) {
			metrics = scrape(t, provisioner)
			return strings.Contains(metrics, ready), nil
		}, func() string {
			var lines []string
			for _, line := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(line, `pgops_postgres_phase{name="db",namespace="`+ns+`"`) {
					lines = append(lines, line)
				}
			}
			return strings.Join(lines, "\n")
		})
		assert.Contains(t, metrics, `pgops_postgres_credential_age_seconds{name="db",namespace="`+ns+`",secret="db-auth"}`)
	})

	t.Run("psql runs a query", func(t *testing.T) {
		bin, err := pgtest.BinDir()
		require.NoError(t, err)
		cred := authCredential(t, ctx, ns, "db")
		out, code := kubectlPgops(t, ctx, "psql", "db", "-n", ns, "--psql", filepath.Join(bin, "psql"), "--",
			"-tA", "-c", "SELECT current_user || ' ' || (40 + 2)")
		require.Equal(t, 0, code, out)
		assert.Contains(t, out, cred.username+" 42")
		assert.NotContains(t, out, cred.password)
	})
}

func scrape(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}
