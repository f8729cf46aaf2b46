package provisioner

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// fakeIsReady is a pg_isready that exits with the codes of the file "codes", one line per
// call (the last line repeats), and counts its calls in the file "calls".
const fakeIsReady = `#!/bin/sh
dir=$(dirname "$0")
n=$(cat "$dir/calls" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" >"$dir/calls"
rc=$(sed -n "${n}p" "$dir/codes"); [ -n "$rc" ] || rc=$(tail -n 1 "$dir/codes")
exit "$rc"
`

// runProbeScript runs a probe's shell script with RunMount and PGDATA in a temporary
// directory and pg_isready answering codes; it returns the exit code and the calls made.
func runProbeScript(t *testing.T, script string, codes []int, setup func(bin, run, pgdata string)) (int, int) {
	t.Helper()
	dir := t.TempDir()
	bin, run, pgdata := filepath.Join(dir, "bin"), filepath.Join(dir, "run"), filepath.Join(dir, "data")
	for _, d := range []string{bin, run, pgdata} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(bin, "pg_isready"), []byte(fakeIsReady), 0o755))
	var lines []string
	for _, c := range codes {
		lines = append(lines, strconv.Itoa(c))
	}
	require.NoError(t, os.WriteFile(filepath.Join(bin, "codes"), []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	if setup != nil {
		setup(bin, run, pgdata)
	}
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(script, RunMount, run))
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "PGDATA=" + pgdata}
	out, err := cmd.CombinedOutput()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(t, err, "%s", out)
	}
	calls := 0
	if b, err := os.ReadFile(filepath.Join(bin, "calls")); err == nil {
		calls, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return code, calls
}

// pg_isready's exit codes.
const (
	accepting = 0
	rejecting = 1
	noAnswer  = 2
)

func TestStartupProbeWaitsForTheServerToAcceptConnections(t *testing.T) {
	t.Parallel()
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{noAnswer, noAnswer, rejecting, accepting}, nil)
	assert.Equal(t, 0, code)
	assert.Equal(t, 4, calls, "it polls until the server accepts, so readiness passes at its first try")
}

func TestStartupProbeWaitsThroughAShortPreparation(t *testing.T) {
	t.Parallel()
	// Every start prepares for a moment: passing on the marker at once would run the
	// readiness probe before the server is up, and the kubelet tries again only a period
	// later.
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{noAnswer, noAnswer, accepting}, func(_, run, _ string) {
		require.NoError(t, os.WriteFile(filepath.Join(run, preparingMarker), nil, 0o644))
	})
	assert.Equal(t, 0, code)
	assert.Equal(t, 3, calls)
}

func TestStartupProbePassesALongPreparationAfterItsPolls(t *testing.T) {
	t.Parallel()
	// A standby cloning its primary is alive for as long as the clone takes.
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{noAnswer}, func(_, run, _ string) {
		require.NoError(t, os.WriteFile(filepath.Join(run, preparingMarker), nil, 0o644))
	})
	assert.Equal(t, 0, code)
	assert.Equal(t, startupPolls, calls)
}

func TestStartupProbeFailsWithoutAnAnswerAfterItsPolls(t *testing.T) {
	t.Parallel()
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{noAnswer}, nil)
	assert.Equal(t, 1, code)
	assert.Equal(t, startupPolls, calls)
}

func TestStartupProbePassesARecoveringServerAfterItsPolls(t *testing.T) {
	t.Parallel()
	// A long crash recovery rejects connections for minutes: it is alive, not killed.
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{rejecting}, nil)
	assert.Equal(t, 0, code)
	assert.Equal(t, startupPolls, calls)
}

func TestStartupProbePassesAWarmStandbyAtOnce(t *testing.T) {
	t.Parallel()
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeWarm), []int{rejecting}, func(_, _, pgdata string) {
		require.NoError(t, os.WriteFile(filepath.Join(pgdata, "standby.signal"), nil, 0o644))
	})
	assert.Equal(t, 0, code)
	assert.Equal(t, 1, calls)
}

func TestWarmReadinessProbe(t *testing.T) {
	t.Parallel()
	script := readinessCommand(kubedbv1.StandbyModeWarm)
	require.Equal(t, []string{"sh", "-c"}, script[:2])
	code, _ := runProbeScript(t, script[2], []int{rejecting}, nil)
	assert.Equal(t, 1, code, "a primary that rejects connections is not ready")
	code, _ = runProbeScript(t, script[2], []int{rejecting}, func(_, _, pgdata string) {
		require.NoError(t, os.WriteFile(filepath.Join(pgdata, "standby.signal"), nil, 0o644))
	})
	assert.Equal(t, 0, code, "a warm standby rejects connections by design")
}

func TestStartupProbePassesWhateverSleepReturns(t *testing.T) {
	t.Parallel()
	// An image whose sleep refuses fractions: the loop's status is sleep's.
	code, calls := runProbeScript(t, startupScript(kubedbv1.StandbyModeHot), []int{noAnswer, accepting}, func(bin, _, _ string) {
		require.NoError(t, os.WriteFile(filepath.Join(bin, "sleep"), []byte("#!/bin/sh\nexit 1\n"), 0o755))
	})
	assert.Equal(t, 0, code)
	assert.Equal(t, 2, calls)
}
