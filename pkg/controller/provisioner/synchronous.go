package provisioner

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// synchronousReplication is what pg asks of its primary: the settings, and how many
// standbys must confirm each commit (0 for asynchronous replication).
type synchronousReplication struct {
	settings credential.SynchronousSettings
	required int
}

func (s synchronousReplication) enabled() bool { return s.required > 0 }

// commitLevels maps commitLevel to synchronous_commit.
var commitLevels = map[kubedbv1.SynchronousCommitLevel]string{
	kubedbv1.SynchronousCommitOn:          "on",
	kubedbv1.SynchronousCommitRemoteApply: "remote_apply",
	kubedbv1.SynchronousCommitRemoteWrite: "remote_write",
	kubedbv1.SynchronousCommitLocal:       "local",
	kubedbv1.SynchronousCommitOff:         "off",
}

// desiredSynchronousReplication renders streamingMode and synchronousReplicationConfig as
// KubeDB does: synchronous_standby_names "<ANY|FIRST> <n> (<standbys>)", the standbys being
// standbyNames, "*", or every standby pod by ordinal. A configuration that could never be
// met (more confirmations than standbys, a name that is not one of the database's standby
// pods) is a userError: commits would wait forever.
func desiredSynchronousReplication(pg *kubedbv1.Postgres) (synchronousReplication, error) {
	if pg.Spec.StreamingMode == nil || *pg.Spec.StreamingMode != kubedbv1.StreamingModeSynchronous {
		return synchronousReplication{}, nil
	}
	invalid := func(format string, args ...any) error {
		return &userError{reason: ReasonInvalidSynchronousReplication, msg: "streamingMode Synchronous: " + fmt.Sprintf(format, args...)}
	}
	n := replicas(pg)
	if n < 2 {
		return synchronousReplication{}, invalid("needs at least 2 replicas (a primary and a standby to confirm commits), spec.replicas is %d", n)
	}
	cfg := kubedbv1.SynchronousReplicationConfig{}
	if pg.Spec.SynchronousReplicationConfig != nil {
		cfg = *pg.Spec.SynchronousReplicationConfig
	}
	required := int(ptr.Deref(cfg.NumSyncReplicas, 1))
	mode := "ANY"
	if cfg.Mode == kubedbv1.SynchronousModeFirst {
		mode = "FIRST"
	}
	commit := "remote_write"
	if cfg.CommitLevel != "" {
		c, ok := commitLevels[cfg.CommitLevel]
		if !ok {
			return synchronousReplication{}, invalid("commitLevel %q is not one of On, RemoteApply, RemoteWrite, Local, Off", cfg.CommitLevel)
		}
		commit = c
	}
	if required < 1 || required >= int(n) {
		return synchronousReplication{}, invalid("numSyncReplicas must be at least 1 and less than spec.replicas (%d), got %d", n, required)
	}

	var members string
	switch {
	case cfg.UseWildcard && len(cfg.StandbyNames) > 0:
		return synchronousReplication{}, invalid("standbyNames and useWildcard are mutually exclusive")
	case cfg.UseWildcard:
		members = "*"
	default:
		standbys := map[string]bool{}
		var all []string
		for i := 1; i < int(n); i++ {
			name := statefulSetName(pg) + "-" + strconv.Itoa(i)
			standbys[name] = true
			all = append(all, name)
		}
		names := cfg.StandbyNames
		if len(names) == 0 {
			names = all
		}
		if required > len(names) {
			return synchronousReplication{}, invalid("numSyncReplicas (%d) is more than the %d standbyNames", required, len(names))
		}
		seen := map[string]bool{}
		quoted := make([]string, 0, len(names))
		for _, name := range names {
			switch {
			case seen[name]:
				return synchronousReplication{}, invalid("standbyNames lists %q twice", name)
			case !standbys[name]:
				return synchronousReplication{}, invalid("standbyNames entry %q is not a standby pod of this database (%s)", name, strings.Join(all, ", "))
			}
			seen[name] = true
			// Pod names are DNS labels: quoting only keeps PostgreSQL from lower-casing.
			quoted = append(quoted, `"`+name+`"`)
		}
		members = strings.Join(quoted, ",")
	}
	return synchronousReplication{
		settings: credential.SynchronousSettings{
			StandbyNames: fmt.Sprintf("%s %d (%s)", mode, required, members),
			Commit:       commit,
		},
		required: required,
	}, nil
}
