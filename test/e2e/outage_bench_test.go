package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
)

// BenchmarkRotationOutage measures what clients of the primary see during a RotateAuth of
// a 3-replica database, per restart mode, on the local control plane with real pods:
//   - pgbench's 4 long-lived sessions: how many are aborted, how many transactions fail;
//   - a client that reconnects (re-reading the auth Secret when its password is refused,
//     as an application would): the longest gap between two of its successful write
//     transactions, tried every 10 ms;
//   - ns/op: the rotation's duration, from applying the request to seeing it ended.
//
// Run by `make bench` (one iteration per mode).
func BenchmarkRotationOutage(b *testing.B) {
	ctx := testContext(b, 15*time.Minute)
	rc := newRotationCase(b, ctx, 3)
	for _, mode := range []opsv1alpha1.RestartMode{opsv1alpha1.RestartAllPods, opsv1alpha1.RestartStandbysOnly, opsv1alpha1.RestartNone} {
		b.Run(string(mode), func(b *testing.B) {
			// Every iteration counts: a rare stall must show in the figures, not be hidden
			// behind the last iteration's.
			var worst, gaps, aborted, failed, restartSum, overheadSum time.Duration
			var rotationMax time.Duration
			b.StopTimer()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bench := startPgbench(b, ctx, primaryTarget(b, ctx, rc.ns, rc.db), rc.before.username, rc.before.password)
				probe := startProbe(ctx, b, rc)
				name := fmt.Sprintf("outage-%s-%d-%d", map[opsv1alpha1.RestartMode]string{opsv1alpha1.RestartAllPods: "all",
					opsv1alpha1.RestartStandbysOnly: "standbys", opsv1alpha1.RestartNone: "none"}[mode], i, time.Now().UnixNano()%1e6)
				kube, pgops := benchClients(b)
				pods := watchRound(ctx, kube, pgops, rc.ns)
				b.StartTimer()
				// From the request's creation to the watch seeing it end: kubectl's start-up
				// and a poll's interval are not the controllers' time.
				started := time.Now()
				if _, err := pgops.OpsV1alpha1().PostgresOpsRequests(rc.ns).Create(ctx,
					rotateAuthRequest(rc.ns, name, rc.db, mode), metav1.CreateOptions{}); err != nil {
					b.Fatalf("creating %s: %v", name, err)
				}
				req := waitRequestEnded(b, ctx, rc.ns, name)
				b.StopTimer()
				total := time.Since(started)
				if ended := pods.endedAt(name); !ended.IsZero() {
					total = ended.Sub(started)
				}
				pods.stop()
				report := bench.stopAfterRecovery(b)
				gap := probe.stop()
				if req.Status.Phase != opsv1alpha1.OpsRequestPhaseSuccessful {
					b.Fatalf("rotation %s ended %s:\n%s", name, req.Status.Phase, describeRequest(req))
				}
				// The controller's overhead: the rotation less its pods' restart windows
				// (one after another), so what is left is the operators' own time.
				restarts := pods.restartWindows()
				b.Logf("%s: rotation %s, restart windows %s, longest gap %s, sessions aborted %d",
					name, total.Round(time.Millisecond), restarts.Round(time.Millisecond), gap.Round(time.Millisecond), report.aborted)
				worst, rotationMax = max(worst, gap), max(rotationMax, total)
				gaps += gap
				aborted += time.Duration(report.aborted)
				failed += time.Duration(report.failed)
				restartSum += restarts
				overheadSum += total - restarts
				rc.advance(b, ctx)
			}
			n := float64(b.N)
			b.ReportMetric(float64(aborted)/n, "aborted-clients")
			b.ReportMetric(float64(failed)/n, "failed-tx")
			b.ReportMetric(float64(worst.Milliseconds()), "max-gap-ms")
			b.ReportMetric(float64(gaps.Milliseconds())/n, "mean-gap-ms")
			b.ReportMetric(float64(rotationMax.Milliseconds()), "rotation-max-ms")
			b.ReportMetric(float64(restartSum.Milliseconds())/n, "restart-windows-ms")
			b.ReportMetric(float64(overheadSum.Milliseconds())/n, "overhead-ms")
		})
	}
}

// probe is a client of the primary that writes every 10 ms and reconnects after a failure.
type probe struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	maxGap time.Duration
}

func startProbe(ctx context.Context, t testing.TB, rc *rotationCase) *probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &probe{cancel: cancel, done: make(chan struct{})}
	host := primaryTarget(t, ctx, rc.ns, rc.db).Host
	cred := rc.before
	go func() {
		defer close(p.done)
		var db *sql.DB
		last := time.Now()
		for ctx.Err() == nil {
			if db == nil {
				db = openDBQuietly(host, cred.username, cred.password)
			}
			_, err := db.ExecContext(ctx, "SELECT txid_current()")
			if err == nil {
				now := time.Now()
				p.mu.Lock()
				p.maxGap = max(p.maxGap, now.Sub(last))
				p.mu.Unlock()
				last = now
			} else if ctx.Err() == nil {
				_ = db.Close()
				db = nil
				if credential.Classify(err) == credential.ClassAuth {
					readCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					cred = authCredentialQuietly(readCtx, rc.ns, rc.db, cred)
					cancel()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		if db != nil {
			_ = db.Close()
		}
	}()
	return p
}

func (p *probe) stop() time.Duration {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxGap
}

// authCredentialQuietly reads the database's auth Secret, or returns fallback when it cannot.
func authCredentialQuietly(ctx context.Context, ns, db string, fallback credentialPair) credentialPair {
	pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, db, metav1.GetOptions{})
	if err != nil || pg.Spec.AuthSecret == nil {
		return fallback
	}
	s, err := env.kube.CoreV1().Secrets(ns).Get(ctx, pg.Spec.AuthSecret.Name, metav1.GetOptions{})
	if err != nil {
		return fallback
	}
	return credentialPair{string(s.Data["username"]), string(s.Data["password"])}
}
