package provisioner

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// synchronousReplication is the synchronous replication pg asks for: required standbys
// (numSyncReplicas; 0 for asynchronous replication) of names (nil with the wildcard) confirm
// each commit, in mode ANY or FIRST, at commit level commit.
type synchronousReplication struct {
	mode     string
	names    []string
	wildcard bool
	required int
	commit   string
}

func (s synchronousReplication) enabled() bool { return s.required > 0 }

// commitsWait says whether the commit level makes commits wait for standbys at all.
func (s synchronousReplication) commitsWait() bool {
	return s.commit != "local" && s.commit != "off"
}

// settingsFor renders the settings for the standbys that are up (ready): the primary
// waits for at most as many standbys as are ready, so a standby being created (a clone can
// take hours), restarted by a RotateAuth or drained never holds every commit on the
// primary; it waits for all required ones again once they are back. It returns the
// settings and how many standbys they wait for.
func (s synchronousReplication) settingsFor(ready map[string]bool) (credential.SynchronousSettings, int) {
	up := 0
	if s.wildcard {
		up = len(ready)
	} else {
		for _, name := range s.names {
			if ready[name] {
				up++
			}
		}
	}
	n := min(s.required, up)
	if n == 0 {
		// No standby to wait for: a commit returns once it is on the primary's disk.
		return credential.SynchronousSettings{Commit: s.commit}, 0
	}
	members := "*"
	if !s.wildcard {
		quoted := make([]string, len(s.names))
		for i, name := range s.names {
			// Pod names are DNS labels: quoting only keeps PostgreSQL from lower-casing.
			quoted[i] = `"` + name + `"`
		}
		members = strings.Join(quoted, ",")
	}
	return credential.SynchronousSettings{StandbyNames: fmt.Sprintf("%s %d (%s)", s.mode, n, members), Commit: s.commit}, n
}

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

	sync := synchronousReplication{mode: mode, required: required, commit: commit}
	switch {
	case cfg.UseWildcard && len(cfg.StandbyNames) > 0:
		return synchronousReplication{}, invalid("standbyNames and useWildcard are mutually exclusive")
	case cfg.UseWildcard:
		sync.wildcard = true
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
		for _, name := range names {
			switch {
			case seen[name]:
				return synchronousReplication{}, invalid("standbyNames lists %q twice", name)
			case !standbys[name]:
				return synchronousReplication{}, invalid("standbyNames entry %q is not a standby pod of this database (%s)", name, strings.Join(all, ", "))
			}
			seen[name] = true
		}
		sync.names = append([]string(nil), names...)
	}
	return sync, nil
}
