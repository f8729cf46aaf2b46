package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

type rotateAuthOptions struct {
	secret  string
	restart string
	timeout time.Duration
	wait    bool
}

var restartModes = []string{string(opsv1alpha1.RestartAllPods), string(opsv1alpha1.RestartStandbysOnly), string(opsv1alpha1.RestartNone)}

func newRotateAuthCommand(env *Env) *cobra.Command {
	o := &rotateAuthOptions{}
	cmd := &cobra.Command{
		Use:   "rotate-auth DATABASE",
		Short: "Rotate a database's superuser credential with a RotateAuth PostgresOpsRequest",
		Long: `rotate-auth creates a RotateAuth PostgresOpsRequest for the database: the ops-manager pauses
it, sets a new credential in PostgreSQL and in the auth Secret (keeping the old one as
username.prev/password.prev), restarts the pods as --restart says, and resumes it.

Without --secret the new password is generated. With --secret the credential is taken from
that Secret (type kubernetes.io/basic-auth, keys username and password) in the same namespace.

With --wait it follows the request step by step and exits 0 when it is Successful, 1 when it
ends Failed or Skipped (the reason is printed).`,
		Example: `  # Rotate to a generated password and follow it
  kubectl pgops rotate-auth my-postgres --wait

  # Rotate to the credential in Secret my-postgres-new-auth, restarting only the standbys
  kubectl pgops rotate-auth my-postgres --secret my-postgres-new-auth --restart StandbysOnly --wait`,
		Args:              oneDatabase,
		ValidArgsFunction: completeDatabases(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), env, args[0])
		},
	}
	cmd.Flags().StringVar(&o.secret, "secret", "", "Secret holding the new credential (keys username and password); empty generates a password.")
	cmd.Flags().StringVar(&o.restart, "restart", string(opsv1alpha1.RestartAllPods), "Which pods restart: "+strings.Join(restartModes, ", ")+".")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "Bound of each step, for example 5m (spec.timeout; 0 leaves the ops-manager's default, 10m).")
	cmd.Flags().BoolVar(&o.wait, "wait", false, "Follow the request until it ends; exit 0 if Successful, 1 otherwise.")
	_ = cmd.RegisterFlagCompletionFunc("restart", cobra.FixedCompletions(restartModes, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// validate refuses flags the API server or the ops-manager would refuse, before anything is
// created.
func (o *rotateAuthOptions) validate() error {
	valid := false
	for _, m := range restartModes {
		valid = valid || o.restart == m
	}
	if !valid {
		return fmt.Errorf("--restart %q: must be one of %s", o.restart, strings.Join(restartModes, ", "))
	}
	if o.timeout < 0 {
		return fmt.Errorf("--timeout %s: must not be negative", o.timeout)
	}
	if o.secret != "" && strings.TrimSpace(o.secret) != o.secret {
		return fmt.Errorf("--secret %q: a Secret name has no surrounding spaces", o.secret)
	}
	return nil
}

// request is the PostgresOpsRequest the flags ask for.
func (o *rotateAuthOptions) request(db string) *opsv1alpha1.PostgresOpsRequest {
	req := &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: db + "-rotate-auth-",
			Labels:       map[string]string{"app.kubernetes.io/created-by": "kubectl-pgops"},
		},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type:        opsv1alpha1.OpsRequestTypeRotateAuth,
			DatabaseRef: opsv1alpha1.DatabaseReference{Name: db},
			RotateAuth:  &opsv1alpha1.RotateAuthOptions{Restart: opsv1alpha1.RestartMode(o.restart)},
		},
	}
	if o.secret != "" {
		req.Spec.Authentication = &opsv1alpha1.AuthSpec{SecretRef: &opsv1alpha1.SecretReference{Kind: "Secret", Name: o.secret}}
	}
	if o.timeout > 0 {
		req.Spec.Timeout = &metav1.Duration{Duration: o.timeout}
	}
	return req
}

func (o *rotateAuthOptions) run(ctx context.Context, env *Env, db string) error {
	if err := o.validate(); err != nil {
		return err
	}
	clients, err := env.Clients()
	if err != nil {
		return err
	}
	if _, err := clients.getPostgres(ctx, db); err != nil {
		return err
	}
	created, err := clients.Pgops.OpsV1alpha1().PostgresOpsRequests(clients.Namespace).Create(ctx, o.request(db), metav1.CreateOptions{})
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("creating the PostgresOpsRequest: %w (your account needs create on postgresopsrequests.ops.kubedb.com)", err)
	}
	if err != nil {
		return fmt.Errorf("creating the PostgresOpsRequest: %w", err)
	}
	out := env.Streams.Out
	fmt.Fprintf(out, "postgresopsrequest/%s created\n", created.Name)
	if !o.wait {
		fmt.Fprintf(out, "Follow it with `kubectl get pgops -n %s %s -w`, or run rotate-auth with --wait.\n", clients.Namespace, created.Name)
		return nil
	}
	p := newProgress(out, env.IsTerminal(out), time.Now)
	ended, err := follow(ctx, clients, created, p)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			p.clear()
			fmt.Fprintf(out, "Stopped following; the request goes on: `kubectl get pgops -n %s %s -w`.\n", clients.Namespace, created.Name)
			return interruptedExitCode(ctx)
		}
		return err
	}
	if ended.Status.Phase != opsv1alpha1.OpsRequestPhaseSuccessful {
		return ExitCode(1)
	}
	return nil
}

// Backoff between watches that end without news (closed at once, or an error event), so a
// misbehaving API server is not hammered.
const (
	rewatchFirst = 200 * time.Millisecond
	rewatchMax   = 5 * time.Second
)

// follow watches req until it ends, showing each change on p. A watch the API server closes
// is opened again from the request as read afresh.
func follow(ctx context.Context, clients *Clients, req *opsv1alpha1.PostgresOpsRequest, p *progress) (*opsv1alpha1.PostgresOpsRequest, error) {
	requests := clients.Pgops.OpsV1alpha1().PostgresOpsRequests(req.Namespace)
	ticker := time.NewTicker(progressRedraw)
	defer ticker.Stop()
	p.show(req)
	backoff := rewatchFirst
	for !req.Status.Phase.Ended() {
		w, err := requests.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", req.Name).String(),
			ResourceVersion: req.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("watching PostgresOpsRequest %s: %w", req.Name, err)
		}
		latest, news, err := nextEnd(ctx, w, req, p, ticker.C)
		w.Stop()
		if err != nil {
			return nil, err
		}
		req = latest
		if req.Status.Phase.Ended() {
			break
		}
		if news {
			backoff = rewatchFirst
		} else {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, rewatchMax)
		}
		// The watch closed (a timeout, or a version too old): read the request again.
		if req, err = requests.Get(ctx, req.Name, metav1.GetOptions{}); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("reading PostgresOpsRequest %s: %w", req.Name, err)
		}
		p.show(req)
	}
	p.end(req)
	return req, nil
}

// nextEnd shows the request's changes from one watch until it ends or the watch closes, and
// tells whether the watch brought any change.
func nextEnd(ctx context.Context, w watch.Interface, req *opsv1alpha1.PostgresOpsRequest, p *progress, tick <-chan time.Time) (*opsv1alpha1.PostgresOpsRequest, bool, error) {
	news := false
	for {
		select {
		case <-ctx.Done():
			return nil, news, ctx.Err()
		case <-tick:
			p.redraw()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return req, news, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, news, fmt.Errorf("PostgresOpsRequest %s was deleted before it ended", req.Name)
			case watch.Error:
				return req, news, nil // too old a version, for one: read it again
			}
			if latest, ok := ev.Object.(*opsv1alpha1.PostgresOpsRequest); ok && latest.Name == req.Name {
				req, news = latest, true
				p.show(req)
				if req.Status.Phase.Ended() {
					return req, news, nil
				}
			}
		}
	}
}
