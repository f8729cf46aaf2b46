package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pgops/pgops/pkg/agent"
	"github.com/pgops/pgops/test/testenv"
)

// BenchmarkIdleCost measures what idle databases cost the machine, everything counted (the
// nodes' kubelets, containerd, shims and kube-proxy, the pods' agents and PostgreSQL, the
// operators' checks, the control plane): the busy cores over a window with no database,
// then with PGOPS_IDLE_DATABASES (default 50) one-replica databases Ready and idle, and
// the difference, with the split by process; and the agent's resident memory per pod.
// Run by `make bench`, first, on a cluster with no other database.
func BenchmarkIdleCost(b *testing.B) {
	ctx := testContext(b, 40*time.Minute)
	size := 50
	if v, err := strconv.Atoi(os.Getenv("PGOPS_IDLE_DATABASES")); err == nil && v > 0 {
		size = v
	}
	const window, settle = 30 * time.Second, 30 * time.Second
	restartOperatorsWithDefaults(b, ctx)
	for i := 0; i < b.N; i++ {
		without := measureIdle(b, ctx, window)
		ns := newNamespace(b, ctx)
		provisionMany(b, ctx, ns, size)
		time.Sleep(settle) // the last starts' work (checkpoints, the operators' first checks) is done
		with := measureIdle(b, ctx, window)
		rss := agentMemory(b)
		added := with.total() - without.total()
		fmt.Fprintf(os.Stderr, "idle cost: without databases %s\n", without)
		fmt.Fprintf(os.Stderr, "idle cost: with %d databases %s\n", size, with)
		fmt.Fprintf(os.Stderr, "idle cost: %d databases add %.3f cores (%.4f per database); pods %.3f, kubelets %+.3f, containerd %+.3f, operators %+.3f; "+
			"agent resident memory per pod: median %.1f MiB, max %.1f MiB over %d agents\n",
			size, added, added/float64(size), with.pods-without.pods, with.kubelets-without.kubelets, with.containerd-without.containerd,
			with.operators-without.operators, median(rss), slices.Max(append(rss, 0)), len(rss))
		b.ReportMetric(added, "cores-added")
		b.ReportMetric(median(rss), "agent-MiB/pod")
		// The next benchmark measures on a machine without these pods.
		deleteNamespace(ns)
		poll(b, ctx, "namespace "+ns+" to be gone", func(ctx context.Context) (bool, error) {
			_, err := env.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}, func() string { return "still there" })
	}
}

// agentMemory is the resident memory, in MiB, of every pgops agent on the machine.
func agentMemory(b *testing.B) []float64 {
	b.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		b.Fatal(err)
	}
	var rss []float64
	for _, comm := range procs {
		name, err := os.ReadFile(comm)
		if err != nil || strings.TrimSpace(string(name)) != agent.ProcessName {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(comm)))
		if err != nil {
			continue
		}
		if u, err := testenv.ProcessUsage(pid); err == nil {
			rss = append(rss, float64(u.RSS)/(1<<20))
		}
	}
	if len(rss) == 0 {
		b.Fatal("no pgops agent runs")
	}
	return rss
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
