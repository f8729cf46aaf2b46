package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

type psqlOptions struct {
	connect  string
	psql     string
	database string
}

func newPsqlCommand(env *Env) *cobra.Command {
	o := &psqlOptions{}
	cmd := &cobra.Command{
		Use:   "psql DATABASE [-- PSQL-ARGS...]",
		Short: "Open psql on a database's primary with the credential from its auth Secret",
		Long: `psql runs your local psql against the database's primary, logged in as the superuser in the
auth Secret. The password goes to psql in a passfile readable only by you, removed when psql
exits: it is never printed, nor put in psql's command line or environment. Your own PG*
variables are not passed to psql, so nothing redirects the connection.

Arguments after -- go to psql unchanged.`,
		Example: `  # An interactive session
  kubectl pgops psql my-postgres

  # One query
  kubectl pgops psql my-postgres -- -c 'SELECT version()'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				args = args[:dash]
			}
			return oneDatabase(cmd, args)
		},
		ValidArgsFunction: completeDatabases(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateConnectMode(o.connect); err != nil {
				return err
			}
			var psqlArgs []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				psqlArgs = args[dash:]
			}
			return o.run(cmd.Context(), env, args[0], psqlArgs)
		},
	}
	addConnectFlag(cmd, &o.connect)
	cmd.Flags().StringVar(&o.psql, "psql", "psql", "The psql program to run: a name looked up in PATH, or a path.")
	cmd.Flags().StringVar(&o.database, "dbname", "postgres", "Database to connect to.")
	return cmd
}

func (o *psqlOptions) run(ctx context.Context, env *Env, db string, psqlArgs []string) error {
	program, err := exec.LookPath(o.psql)
	if err != nil {
		return fmt.Errorf("psql not found (%v): install the PostgreSQL client (Debian/Ubuntu: apt-get install postgresql-client; macOS: brew install libpq), or name it with --psql", err)
	}
	clients, err := env.Clients()
	if err != nil {
		return err
	}
	pg, err := clients.getPostgres(ctx, db)
	if err != nil {
		return err
	}
	_, user, password, err := clients.superuser(ctx, pg)
	if err != nil {
		return err
	}
	// Ctrl-C belongs to psql (it cancels a query) once it runs: the port-forward must not
	// end with the plugin's context, only when psql exits.
	ep, err := clients.primaryEndpoint(ctx, context.WithoutCancel(ctx), pg, o.connect, env.Streams.ErrOut)
	if err != nil {
		return err
	}
	defer ep.close()

	dir, err := os.MkdirTemp("", "kubectl-pgops-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	passfile := filepath.Join(dir, "pgpass")
	line, err := passfileLine(ep.host, ep.port, user, password)
	if err != nil {
		return err
	}
	if err := os.WriteFile(passfile, []byte(line), 0o600); err != nil {
		return err
	}

	// Everything psql connects with is in one conninfo, and no PG* variable of the user's
	// (PGHOSTADDR, PGSERVICE, ...) can send the password to another server than the one
	// the passfile line names.
	conninfo := conninfoString(map[string]string{
		"host": ep.host, "port": strconv.Itoa(ep.port), "user": user, "dbname": o.database,
		"passfile": passfile, "application_name": "kubectl-pgops",
	})
	cmd := exec.Command(program, append([]string{"--dbname=" + conninfo}, psqlArgs...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Streams.In, env.Streams.Out, env.Streams.ErrOut
	cmd.Env = withoutPGVariables(os.Environ())
	if err := cmd.Start(); err != nil {
		return err
	}
	// The terminal sends Ctrl-C to psql itself; a signal sent to the plugin alone is passed on.
	forwarded := make(chan os.Signal, 1)
	signal.Notify(forwarded, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(forwarded)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case sig := <-forwarded:
			_ = cmd.Process.Signal(sig)
		case err := <-exited:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
					return ExitCode(128 + int(status.Signal()))
				}
				return ExitCode(exit.ExitCode())
			}
			return err
		}
	}
}

// conninfoString is a libpq keyword/value connection string with every value quoted.
func conninfoString(params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	quote := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"='"+quote(params[k])+"'")
	}
	return strings.Join(parts, " ")
}

// passfileLine is a ~/.pgpass line for exactly this host, port and user: ':' and '\' are
// escaped as libpq reads them. A line break cannot be escaped there, so it is refused.
func passfileLine(host string, port int, user, password string) (string, error) {
	if strings.ContainsAny(user+password, "\r\n") {
		return "", errors.New("the auth Secret's username or password holds a line break, which psql's passfile cannot carry")
	}
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace
	return strings.Join([]string{escape(host), strconv.Itoa(port), "*", escape(user), escape(password)}, ":") + "\n", nil
}

// withoutPGVariables drops libpq's environment (PGPASSWORD, PGHOSTADDR, PGSERVICE, ...).
func withoutPGVariables(environ []string) []string {
	var kept []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "PG") {
			kept = append(kept, kv)
		}
	}
	return kept
}
