package provisioner

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func TestMetricsReportPhaseCredentialAgeAndRotateAfter(t *testing.T) {
	f := provisioned(t, newPG("x", rotateEvery(time.Hour, "")))
	f.later(90 * time.Minute)

	pg := f.postgres("x")
	require.NotEmpty(t, pg.Status.Phase)
	var phaseLines []string
	for _, phase := range phases {
		v := "0"
		if phase == pg.Status.Phase {
			v = "1"
		}
		phaseLines = append(phaseLines, `pgops_postgres_phase{name="x",namespace="`+testNS+`",phase="`+string(phase)+`"} `+v)
	}
	want := `
# HELP pgops_postgres_credential_age_seconds How long the credential PostgreSQL accepts has been in use, counted as the rotateAfter schedule counts it: from the auth Secret's auth-active-from annotation, else spec.authSecret.activeFrom, else the Secret's creation.
# TYPE pgops_postgres_credential_age_seconds gauge
pgops_postgres_credential_age_seconds{name="x",namespace="` + testNS + `",secret="x-auth"} 5400
# HELP pgops_postgres_credential_rotate_after_seconds spec.authSecret.rotateAfter, for databases whose credential pgops rotates on a schedule.
# TYPE pgops_postgres_credential_rotate_after_seconds gauge
pgops_postgres_credential_rotate_after_seconds{name="x",namespace="` + testNS + `"} 3600
# HELP pgops_postgres_phase 1 for the status.phase each Postgres is in, 0 for the other phases.
# TYPE pgops_postgres_phase gauge
` + strings.Join(phaseLines, "\n") + "\n"
	require.NoError(t, testutil.CollectAndCompare(f.c.MetricsCollector(), strings.NewReader(want)))
}

func TestMetricsHaveNoCredentialSeriesForAUsersSecretNorARotateAfterItIgnores(t *testing.T) {
	mine := userSecret("mine", map[string]string{"username": "postgres", "password": "s3cret-s3cret"})
	f := provisioned(t, newPG("x", func(pg *kubedbv1.Postgres) {
		pg.Spec.AuthSecret = &kubedbv1.SecretReference{Name: "mine", ExternallyManaged: true, RotateAfter: &metav1.Duration{Duration: time.Minute}}
	}), mine)
	require.Equal(t, 0, testutil.CollectAndCount(f.c.MetricsCollector(),
		"pgops_postgres_credential_age_seconds", "pgops_postgres_credential_rotate_after_seconds"))
	require.Equal(t, len(phases), testutil.CollectAndCount(f.c.MetricsCollector(), "pgops_postgres_phase"))
}
