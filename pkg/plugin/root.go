// Package plugin is `kubectl pgops`: a kubectl plugin that rotates a database's credential
// and follows the rotation, shows a database's state, and opens psql on its primary. It
// talks to the API server with the user's kubeconfig through the generated clientset, as
// kubectl does.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
)

// Streams are the plugin's standard input and outputs.
type Streams struct {
	In          io.Reader
	Out, ErrOut io.Writer
}

// Clients are what the commands talk to; tests pass fakes.
type Clients struct {
	Config    *rest.Config
	Namespace string
	Kube      kubernetes.Interface
	Pgops     pgopsclient.Interface
}

// Env is what the commands need from outside: clients, and the database reads that tests
// replace.
type Env struct {
	Streams Streams
	// Clients connects to the cluster the kubeconfig flags name.
	Clients func() (*Clients, error)
	// ReplicationLag reads pg_stat_replication on a primary.
	ReplicationLag func(ctx context.Context, target credential.Target) ([]credential.StandbyLag, error)
	// IsTerminal tells whether w is a terminal, for the live progress display.
	IsTerminal func(w io.Writer) bool
}

// ExitCode is an error that sets the process's exit code without printing anything more:
// the command already said what happened.
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// NewCommand is the `kubectl pgops` command tree, with kubectl's connection flags. A nil
// env.Clients connects with the kubeconfig flags.
func NewCommand(env Env) *cobra.Command {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	root := &cobra.Command{
		Use:   "kubectl-pgops",
		Short: "Rotate, inspect and connect to pgops PostgreSQL databases",
		Long: `kubectl pgops works with the Postgres databases that pgops runs:

  rotate-auth  rotate a database's superuser credential, and follow the rotation
  status       phase, primary, standbys and their replication lag, credential age, rotations
  psql         open psql on the primary with the credential from the auth Secret

It uses your kubeconfig and the same flags as kubectl (--namespace, --context, ...).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl pgops"},
	}
	root.SetIn(env.Streams.In)
	root.SetOut(env.Streams.Out)
	root.SetErr(env.Streams.ErrOut)
	flags := root.PersistentFlags()
	flags.StringVar(&loading.ExplicitPath, "kubeconfig", "", "Path to the kubeconfig file to use.")
	clientcmd.BindOverrideFlags(overrides, flags, clientcmd.RecommendedConfigOverrideFlags(""))
	if env.Clients == nil {
		env.Clients = func() (*Clients, error) { return connect(loading, overrides) }
	}
	if env.ReplicationLag == nil {
		env.ReplicationLag = credential.ReplicationLag
	}
	if env.IsTerminal == nil {
		env.IsTerminal = isTerminal
	}
	root.AddCommand(newRotateAuthCommand(&env), newStatusCommand(&env), newPsqlCommand(&env))
	return root
}

func connect(loading *clientcmd.ClientConfigLoadingRules, overrides *clientcmd.ConfigOverrides) (*Clients, error) {
	config := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, overrides)
	cfg, err := config.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w (set --kubeconfig or KUBECONFIG, or --context)", err)
	}
	cfg.UserAgent = "kubectl-pgops"
	ns, _, err := config.Namespace()
	if err != nil {
		return nil, fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pgops, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Config: cfg, Namespace: ns, Kube: kube, Pgops: pgops}, nil
}

// getPostgres reads the database a command names, with an error that says what to do.
func (c *Clients) getPostgres(ctx context.Context, name string) (*kubedbv1.Postgres, error) {
	pg, err := c.Pgops.KubedbV1().Postgreses(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("postgres %q not found in namespace %q: `kubectl get pg -n %s` lists the databases there, and -n chooses another namespace", name, c.Namespace, c.Namespace)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("reading postgres %q in namespace %q: %w (your account needs get on postgreses.kubedb.com)", name, c.Namespace, err)
	case err != nil:
		return nil, fmt.Errorf("reading postgres %q in namespace %q: %w", name, c.Namespace, err)
	}
	return pg, nil
}

// completeDatabases completes a database name from the Postgres objects in the namespace.
func completeDatabases(env *Env) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		clients, err := env.Clients()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		list, err := clients.Pgops.KubedbV1().Postgreses(clients.Namespace).List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for _, pg := range list.Items {
			names = append(names, pg.Name)
		}
		sort.Strings(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// oneDatabase is the argument check of commands that take one database name.
func oneDatabase(cmd *cobra.Command, args []string) error {
	if len(args) != 1 || args[0] == "" {
		return errors.New("name one database, for example `" + cmd.CommandPath() + " my-postgres`; `kubectl get pg` lists them")
	}
	return nil
}
