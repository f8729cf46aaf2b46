// Package agent is the pgops instance agent: PID 1 of every database container. It prepares
// the data directory (a new primary's initdb, a standby's clone, the authentication rules,
// the passfile and the standby's settings), runs PostgreSQL as its child, forwards the
// kubelet's signals to it and reaps orphans, answers the kubelet's probes over HTTP from a
// connection to the server it keeps, and re-points a running standby at a new credential
// for the ops-manager (docs/architecture.md, "The database pod").
//
// It replaces the shell entrypoint of earlier releases and reads the same environment, so a
// data directory made by either starts under the other.
package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// The pod's layout, as the provisioner mounts it.
const (
	// RunDir is the writable emptyDir for the Unix socket and lock file, where psql in the
	// official images looks by default.
	RunDir = "/var/run/postgresql"
	// DefaultPort is PostgreSQL's port when PGPORT is not set.
	DefaultPort = 5432
	// DefaultProbePort is where the agent answers the kubelet's probes and the
	// ops-manager's re-point, on the container port named PortName.
	DefaultProbePort = 8008
	PortName         = "agent"
	// ProcessName is the agent's command name (its binary's), as ps shows it.
	ProcessName = "pgops-agent"
)

// StandbyMode is KubeDB's spec.standbyMode.
type StandbyMode string

const (
	Hot  StandbyMode = "Hot"
	Warm StandbyMode = "Warm"
)

// Config is what one pod's agent works with, read from the container's environment.
type Config struct {
	// User and Password are the superuser credential (the auth Secret's).
	User     string
	Password string
	// DataDir is PGDATA; its parent is the data volume, which also holds the passfile.
	DataDir string
	// PodName is <statefulset>-<ordinal>; ordinal 0 is the primary.
	PodName string
	PodIP   string
	Ordinal int
	// PrimaryHost and PrimaryPort are where a standby finds its primary (the primary
	// Service).
	PrimaryHost string
	PrimaryPort int
	StandbyMode StandbyMode
	// Port is PostgreSQL's port (PGPORT).
	Port int
	// RunDir holds the server's Unix socket.
	RunDir string
}

// IsPrimary tells whether this pod starts as the primary.
func (c *Config) IsPrimary() bool { return c.Ordinal == 0 }

// Passfile is the standby's credential for connecting to the primary, next to PGDATA so it
// lives as long as the data.
func (c *Config) Passfile() string { return filepath.Join(filepath.Dir(c.DataDir), ".pgpass") }

// HotStandby is the value of hot_standby.
func (c *Config) HotStandby() string {
	if c.StandbyMode == Warm {
		return "off"
	}
	return "on"
}

// ConfigFromEnv reads the environment the provisioner gives the container (the same as the
// shell entrypoint's). Every problem is named at once, none of them with a secret's value.
func ConfigFromEnv(getenv func(string) string) (*Config, error) {
	var problems []string
	require := func(name string) string {
		v := getenv(name)
		if v == "" {
			problems = append(problems, name+" is not set")
		}
		return v
	}
	c := &Config{
		User:        require("POSTGRES_USER"),
		Password:    require("POSTGRES_PASSWORD"),
		DataDir:     require("PGDATA"),
		PodName:     require("POD_NAME"),
		PodIP:       require("POD_IP"),
		PrimaryHost: getenv("PRIMARY_HOST"),
		StandbyMode: StandbyMode(getenv("STANDBY_MODE")),
		RunDir:      RunDir,
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		problems = append(problems, fmt.Sprintf("PGDATA %q is not an absolute path", c.DataDir))
	}
	switch c.StandbyMode {
	case "":
		c.StandbyMode = Hot
	case Hot, Warm:
	default:
		problems = append(problems, fmt.Sprintf("STANDBY_MODE must be Hot or Warm, got %q", c.StandbyMode))
	}
	var err error
	if c.Port, err = portFromEnv(getenv, "PGPORT", DefaultPort); err != nil {
		problems = append(problems, err.Error())
	}
	if c.PrimaryPort, err = portFromEnv(getenv, "PRIMARY_PORT", DefaultPort); err != nil {
		problems = append(problems, err.Error())
	}
	if c.PodName != "" {
		i := strings.LastIndexByte(c.PodName, '-')
		n, err := strconv.Atoi(c.PodName[i+1:])
		if i < 0 || err != nil || n < 0 || c.PodName[i+1:] != strconv.Itoa(n) {
			problems = append(problems, fmt.Sprintf("cannot find the ordinal in POD_NAME %q", c.PodName))
		}
		c.Ordinal = n
		if err == nil && n > 0 && c.PrimaryHost == "" {
			problems = append(problems, "PRIMARY_HOST is not set (a standby needs its primary)")
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return c, nil
}

func portFromEnv(getenv func(string) string, name string, def int) (int, error) {
	s := getenv(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s must be a port number, got %q", name, s)
	}
	return n, nil
}
