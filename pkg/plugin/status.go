package plugin

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/podstatus"
)

// lastRotations is how many of a database's requests status lists.
const lastRotations = 5

type statusOptions struct {
	connect string
}

func newStatusCommand(env *Env) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status DATABASE",
		Short: "Show a database's phase, primary, standbys with their replication lag, credential age and last rotations",
		Long: `status shows what pgops knows about a database (its phase and conditions, its pods and their
roles, the auth Secret and how old its credential is, the last ops requests) and what the
primary reports of its standbys (pg_stat_replication: state, sync state and replay lag).

The replication state needs a login to the primary with the auth Secret's credential; see
--connect. Nothing secret is printed.`,
		Example:           `  kubectl pgops status my-postgres -n demo`,
		Args:              oneDatabase,
		ValidArgsFunction: completeDatabases(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateConnectMode(o.connect); err != nil {
				return err
			}
			return o.run(cmd.Context(), env, args[0])
		},
	}
	addConnectFlag(cmd, &o.connect)
	return cmd
}

func addConnectFlag(cmd *cobra.Command, mode *string) {
	cmd.Flags().StringVar(mode, "connect", connectAuto, "How to reach the primary: auto (the primary Service from a pod of the cluster, else a port-forward to the primary pod), service, or port-forward.")
	_ = cmd.RegisterFlagCompletionFunc("connect", cobra.FixedCompletions(connectModes, cobra.ShellCompDirectiveNoFileComp))
}

// databaseState is everything status prints, read before printing.
type databaseState struct {
	pg           *kubedbv1.Postgres
	pods         []corev1.Pod
	secret       string
	requests     []opsv1alpha1.PostgresOpsRequest
	standbys     []credential.StandbyLag
	standbysRead bool
	replication  string // why the standbys could not be read, or how they were
}

func (o *statusOptions) run(ctx context.Context, env *Env, db string) error {
	clients, err := env.Clients()
	if err != nil {
		return err
	}
	st, err := o.read(ctx, env, clients, db)
	if err != nil {
		return err
	}
	st.print(env.Streams.Out, time.Now())
	return nil
}

func (o *statusOptions) read(ctx context.Context, env *Env, clients *Clients, db string) (*databaseState, error) {
	pg, err := clients.getPostgres(ctx, db)
	if err != nil {
		return nil, err
	}
	st := &databaseState{pg: pg}
	if st.pods, err = clients.databasePods(ctx, pg); err != nil {
		return nil, err
	}
	sort.Slice(st.pods, func(i, j int) bool { return st.pods[i].Name < st.pods[j].Name })
	list, err := clients.Pgops.OpsV1alpha1().PostgresOpsRequests(pg.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the ops requests in namespace %s: %w", pg.Namespace, err)
	}
	for _, r := range list.Items {
		if r.Spec.DatabaseRef.Name == pg.Name {
			st.requests = append(st.requests, r)
		}
	}
	sort.Slice(st.requests, func(i, j int) bool {
		return st.requests[j].CreationTimestamp.Before(&st.requests[i].CreationTimestamp)
	})
	st.requests = st.requests[:min(len(st.requests), lastRotations)]

	// The replication state is the primary's word; failing to read it is shown, not fatal.
	_, user, password, err := clients.superuser(ctx, pg)
	if st.secret = pg.ActiveAuthSecretName(); st.secret == "" {
		st.secret = pg.Name + "-auth"
	}
	if err != nil {
		st.replication = "not read: " + err.Error()
		return st, nil
	}
	ep, err := clients.primaryEndpoint(ctx, ctx, pg, o.connect, io.Discard)
	if err != nil {
		st.replication = "not read: " + err.Error()
		return st, nil
	}
	defer ep.close()
	readCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if st.standbys, err = env.ReplicationLag(readCtx, ep.target(user, password)); err != nil {
		st.replication = "not read through " + ep.how + ": " + err.Error()
		return st, nil
	}
	st.standbysRead = true
	st.replication = "read from the primary through " + ep.how
	return st, nil
}

func (st *databaseState) print(out io.Writer, now time.Time) {
	pg := st.pg
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	replicas := int32(1)
	if pg.Spec.Replicas != nil {
		replicas = *pg.Spec.Replicas
	}
	fmt.Fprintf(w, "Postgres:\t%s/%s\n", pg.Namespace, pg.Name)
	fmt.Fprintf(w, "Phase:\t%s\n", orUnknown(string(pg.Status.Phase)))
	fmt.Fprintf(w, "Version:\t%s, %d replica(s), storage %s\n", pg.Spec.Version, replicas, orUnknown(string(pg.Spec.StorageType)))
	if c := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused); c != nil && pg.Status.PausedBy != nil {
		fmt.Fprintf(w, "Paused:\tby %s for %s\n", pg.Status.PausedBy.Name, age(now, c.LastTransitionTime.Time))
	}
	for _, c := range pg.Status.Conditions {
		if c.Status != metav1.ConditionTrue && c.Type != kubedbv1.ConditionPaused {
			fmt.Fprintf(w, "Condition:\t%s=%s %s: %s\n", c.Type, c.Status, c.Reason, oneLine(c.Message))
		}
	}

	fmt.Fprintf(w, "\nPods:\n  NAME\tROLE\tREADY\tSTATE\tSYNC\tREPLAY LAG\n")
	byName := map[string]credential.StandbyLag{}
	for _, s := range st.standbys {
		byName[s.Name] = s // the newest connection of a name wins
	}
	for _, pod := range st.pods {
		role := orUnknown(pod.Labels[kubedbv1.LabelRole])
		state, sync, lag := "-", "-", "-"
		switch s, found := byName[pod.Name]; {
		case role == kubedbv1.RolePrimary:
		case found:
			state, sync, lag = s.State, s.SyncState, formatLag(s)
		case st.standbysRead:
			state = "not connected"
		default:
			state = "unknown"
		}
		fmt.Fprintf(w, "  %s\t%s\t%t\t%s\t%s\t%s\n", pod.Name, role, podstatus.Ready(&pod), state, sync, lag)
	}
	for _, s := range st.standbys {
		if !hasPod(st.pods, s.Name) {
			fmt.Fprintf(w, "  %s\t(not a pod)\t-\t%s\t%s\t%s\n", s.Name, s.State, s.SyncState, formatLag(s))
		}
	}
	fmt.Fprintf(w, "Replication:\t%s\n", st.replication)

	fmt.Fprintf(w, "\nAuth Secret:\t%s\n", st.secret)
	if a := pg.Status.AuthSecret; a != nil && a.LastUpdateTimestamp != nil {
		fmt.Fprintf(w, "Credential age:\t%s (changed %s)\n", age(now, a.LastUpdateTimestamp.Time), a.LastUpdateTimestamp.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "Credential age:\tsince the database was created, %s\n", age(now, pg.CreationTimestamp.Time))
	}
	if a := pg.Spec.AuthSecret; a != nil && a.RotateAfter != nil && a.RotateAfter.Duration > 0 {
		fmt.Fprintf(w, "Rotate after:\t%s\n", a.RotateAfter.Duration)
	}
	if c := meta.FindStatusCondition(pg.Status.Conditions, "CredentialRotation"); c != nil {
		fmt.Fprintf(w, "Rotation:\t%s\n", oneLine(c.Message))
	}

	fmt.Fprintf(w, "\nLast ops requests:\n")
	if len(st.requests) == 0 {
		fmt.Fprintf(w, "  none\n")
		return
	}
	fmt.Fprintf(w, "  NAME\tTYPE\tSTATUS\tAGE\tTOOK\n")
	for _, r := range st.requests {
		took := "-"
		for _, c := range r.Status.Conditions {
			if endConditions[c.Type] && c.Status == metav1.ConditionTrue {
				took = c.LastTransitionTime.Sub(r.CreationTimestamp.Time).Round(100 * time.Millisecond).String()
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", r.Name, r.Spec.Type, orUnknown(string(r.Status.Phase)), age(now, r.CreationTimestamp.Time), took)
	}
}

func hasPod(pods []corev1.Pod, name string) bool {
	for _, p := range pods {
		if p.Name == name {
			return true
		}
	}
	return false
}

func formatLag(s credential.StandbyLag) string {
	if s.ReplayLagBytes < 0 {
		return "unknown"
	}
	text := fmt.Sprintf("%d B", s.ReplayLagBytes)
	if s.ReplayLagSeconds >= 0 {
		text += fmt.Sprintf(" (%.1fs)", s.ReplayLagSeconds)
	}
	return text
}

func age(now, t time.Time) string { return duration.HumanDuration(now.Sub(t)) }

func orUnknown(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
