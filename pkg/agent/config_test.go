package agent

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromEnvReadsTheProvisionersEnvironment(t *testing.T) {
	c, err := ConfigFromEnv(env(map[string]string{
		"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "secret", "PGDATA": "/var/pv/data",
		"POD_NAME": "my-db-12", "POD_IP": "198.18.0.4", "PRIMARY_HOST": "198.19.0.7", "PRIMARY_PORT": "5433",
		"STANDBY_MODE": "Warm",
	}))
	require.NoError(t, err)
	require.Equal(t, 12, c.Ordinal)
	require.False(t, c.IsPrimary())
	require.Equal(t, 5433, c.PrimaryPort)
	require.Equal(t, 5432, c.Port)
	require.Equal(t, "off", c.HotStandby())
	require.Equal(t, "/var/pv/.pgpass", c.Passfile())
	require.Equal(t, RunDir, c.RunDir)
}

func TestConfigFromEnvNamesEveryProblemAndNoSecret(t *testing.T) {
	_, err := ConfigFromEnv(env(map[string]string{
		"POSTGRES_PASSWORD": "s3cret-value", "PGDATA": "relative", "POD_NAME": "db-1", "POD_IP": "198.18.0.4",
		"STANDBY_MODE": "Cold", "PGPORT": "70000",
	}))
	require.Error(t, err)
	for _, want := range []string{"POSTGRES_USER is not set", "not an absolute path", "STANDBY_MODE must be Hot or Warm",
		"PGPORT must be a port number", "PRIMARY_HOST is not set"} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "s3cret-value")
}

func TestConfigFromEnvRefusesAPodNameWithoutOrdinal(t *testing.T) {
	for _, name := range []string{"db", "db-", "db-x", "db-01", "db-+1"} {
		_, err := ConfigFromEnv(env(map[string]string{"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "PGDATA": "/d", "POD_NAME": name, "POD_IP": "198.18.0.1"}))
		require.ErrorContains(t, err, "cannot find the ordinal", name)
	}
}
