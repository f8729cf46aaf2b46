package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pgops/pgops/pkg/agent"
	"github.com/pgops/pgops/pkg/credential"
)

// repointPollInterval is how soon a re-point asks again a standby that has not replayed
// the new credential yet, or does not stream on it yet: no informer reports either.
const repointPollInterval = 50 * time.Millisecond

// repointStandbys gives the running standbys names the new credential without a restart
// (restart mode None), all at once. Each standby's pgops agent does it in one request
// (pkg/agent/repoint.go): it takes the credential only once the standby's server has
// replayed it, writes the passfile, makes the WAL receiver reconnect with it, and answers
// when the standby streams on that connection. The request is idempotent, so a crash
// anywhere repeats nothing that is done: the agent leaves a passfile that holds the
// credential and a receiver that connected since it was written alone.
//
// The pod keeps its environment: it names the credential record, which holds the same
// credential, so the pod's next start writes the same passfile (restartUnrepointable
// restarts the standbys whose pods name another Secret, or run no agent).
func (c *Controller) repointStandbys(ctx context.Context, r *rotation, sts *appsv1.StatefulSet, auth basicAuth, names []string) (outcome, bool, error) {
	type call struct {
		name    string
		target  credential.Target
		port    int
		written bool
		err     error
	}
	var calls []*call
	for _, name := range names {
		if isTrue(r.req.Status.Conditions, perPodCondition(ConditionRepointStandby, name)) {
			continue // verified in an earlier sync; RestartNodes checks replication at the end
		}
		target, err := c.podTarget(r.req, sts, name)
		if err != nil {
			return waiting("waiting for standby %s: %v", name, err), false, nil
		}
		pod, err := c.pods.Pods(r.req.Namespace).Get(name)
		if err != nil {
			return waiting("waiting for standby %s: %v", name, err), false, nil
		}
		port := agentPort(pod)
		if port == 0 {
			// Planned pods run the agent (restartUnrepointable); this one was replaced since
			// by a pod of an earlier template, which only a restart moves.
			return outcome{}, false, fatal(ReasonInvalidRequest, "standby %s runs no pgops agent, so it cannot be re-pointed; "+
				"delete the pod so it restarts on the current template, then retry the rotation", name)
		}
		calls = append(calls, &call{name: name, target: target, port: port})
	}
	var wg sync.WaitGroup
	for _, cl := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.written, cl.err = c.db.RepointStandby(ctx, cl.target, cl.port, auth.username, auth.password)
		}()
	}
	wg.Wait()

	var pending *outcome
	for _, cl := range calls {
		condition := perPodCondition(ConditionRepointStandby, cl.name)
		var refused *agent.AgentError
		switch {
		case cl.err == nil:
			msg := fmt.Sprintf("standby %s streams with the new credential, without a restart", cl.name)
			if setCondition(&r.req.Status.Conditions, condition, metav1.ConditionTrue, ReasonCompleted, msg, r.req.Generation, r.now) {
				c.recorder.Event(r.req, corev1.EventTypeNormal, ConditionRepointStandby, msg)
			}
		case errors.As(cl.err, &refused) && refused.Retryable():
			// Not replayed yet, or not streaming on the new connection yet.
			setCondition(&r.req.Status.Conditions, condition, metav1.ConditionFalse, ReasonInProgress,
				fmt.Sprintf("giving standby %s the new credential: %s", cl.name, refused.Message), r.req.Generation, r.now)
			if pending == nil {
				out := again("waiting for standby %s: %s", cl.name, refused.Message)
				pending = &out
			}
		default:
			return outcome{}, false, fmt.Errorf("giving standby %s the new credential: %w", cl.name, cl.err)
		}
	}
	if pending != nil {
		return *pending, false, nil
	}
	return outcome{}, true, nil
}

// again is waiting, looked at again shortly.
func again(format string, args ...any) outcome {
	out := waiting(format, args...)
	out.recheckAfter = repointPollInterval
	return out
}
