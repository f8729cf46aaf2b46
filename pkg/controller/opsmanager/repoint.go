package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pgops/pgops/pkg/agent"
)

// repointPollInterval is how often a re-point looks again at a standby that reconnects:
// a WAL receiver reconnects within milliseconds, and no informer reports it.
const repointPollInterval = 50 * time.Millisecond

// repointStandby gives the running standby name the new credential without a restart
// (restart mode None), one stage per call, each checked live on the standby first so a
// crash anywhere repeats nothing that is done:
//  1. its passfile gets the new credential, written by the pod's pgops agent once the
//     standby's server has replayed it (the agent accepts only the credential the server
//     holds);
//  2. its WAL sender on the primary is ended, so the WAL receiver reconnects, and that
//     connection authenticates with the new credential (the old one is refused by now);
//  3. done when the WAL receiver streams on a connection made since the passfile was
//     written.
//
// The pod keeps its environment: it names the target Secret, which holds the same
// credential, so the pod's next start writes the same passfile (planPods restarts the
// standbys whose pods name another Secret).
func (c *Controller) repointStandby(ctx context.Context, r *rotation, sts *appsv1.StatefulSet, auth basicAuth, name string) (outcome, bool, error) {
	condition := perPodCondition(ConditionRepointStandby, name)
	if isTrue(r.req.Status.Conditions, condition) {
		return outcome{}, true, nil // verified in an earlier sync; RestartNodes checks replication at the end
	}
	standby, err := c.podTarget(r.req, sts, name)
	if err != nil {
		return waiting("waiting for standby %s: %v", name, err), false, nil
	}
	pod, err := c.pods.Pods(r.req.Namespace).Get(name)
	if err != nil {
		return waiting("waiting for standby %s: %v", name, err), false, nil
	}
	port := agentPort(pod)
	if port == 0 {
		// Planned pods run the agent (restartUnrepointable); this one was replaced since by
		// a pod of an earlier template, which only a restart moves.
		return outcome{}, false, fatal(ReasonInvalidRequest, "standby %s runs no pgops agent, so it cannot be re-pointed; "+
			"delete the pod so it restarts on the current template, then retry the rotation", name)
	}
	standby.User, standby.Password = auth.username, auth.password
	state, err := c.db.CheckStandby(ctx, standby, auth.username, auth.password)
	if err != nil {
		return outcome{}, false, fmt.Errorf("checking standby %s: %w", name, err)
	}
	switch {
	case !state.PassfileCurrent:
		if _, err := c.db.WriteStandbyPassfile(ctx, standby, port, auth.username, auth.password); err != nil {
			var refused *agent.AgentError
			if errors.As(err, &refused) && refused.NotYetReplayed() {
				// The standby's server has not replayed the ALTER ROLE yet.
				return again("waiting for standby %s to replay the new credential", name), false, nil
			}
			return outcome{}, false, fmt.Errorf("giving standby %s the new credential: %w", name, err)
		}
		setCondition(&r.req.Status.Conditions, condition, metav1.ConditionFalse, ReasonInProgress,
			fmt.Sprintf("wrote the new credential into the passfile of standby %s", name), r.req.Generation, r.now)
		return again("giving standby %s the new credential", name), false, nil
	case !state.ReconnectedSince:
		primary, err := c.primaryTarget(r.req)
		if err != nil {
			return outcome{}, false, err
		}
		primary.User, primary.Password = auth.username, auth.password
		if err := c.db.ReconnectStandby(ctx, primary, state.ApplicationName); err != nil {
			return outcome{}, false, fmt.Errorf("reconnecting standby %s: %w", name, err)
		}
		setCondition(&r.req.Status.Conditions, condition, metav1.ConditionFalse, ReasonInProgress,
			fmt.Sprintf("standby %s reconnects to the primary with the new credential", name), r.req.Generation, r.now)
		return again("waiting for standby %s to reconnect with the new credential", name), false, nil
	case !state.Streaming:
		return again("waiting for standby %s to stream again", name), false, nil
	}
	msg := fmt.Sprintf("standby %s streams with the new credential, without a restart", name)
	if setCondition(&r.req.Status.Conditions, condition, metav1.ConditionTrue, ReasonCompleted, msg, r.req.Generation, r.now) {
		c.recorder.Event(r.req, corev1.EventTypeNormal, ConditionRepointStandby, msg)
	}
	return outcome{}, true, nil
}

// again is waiting, looked at again shortly.
func again(format string, args ...any) outcome {
	out := waiting(format, args...)
	out.recheckAfter = repointPollInterval
	return out
}
