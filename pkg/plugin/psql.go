package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

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
exits: it is never printed, nor put in psql's command line or environment.

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
	ep, err := clients.primaryEndpoint(ctx, pg, o.connect, env.Streams.ErrOut)
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

	cmd := exec.CommandContext(ctx, program, psqlArgs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Streams.In, env.Streams.Out, env.Streams.ErrOut
	cmd.Env = append(withoutPGPassword(os.Environ()),
		"PGHOST="+ep.host, "PGPORT="+strconv.Itoa(ep.port), "PGUSER="+user, "PGDATABASE="+o.database,
		"PGPASSFILE="+passfile, "PGAPPNAME=kubectl-pgops")
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return ExitCode(exit.ExitCode())
	}
	return err
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

// withoutPGPassword drops PGPASSWORD, which libpq would prefer over the passfile.
func withoutPGPassword(environ []string) []string {
	var kept []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "PGPASSWORD=") {
			kept = append(kept, kv)
		}
	}
	return kept
}
