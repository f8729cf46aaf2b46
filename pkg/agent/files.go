package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pgops/pgops/pkg/credential"
)

// hbaHeader starts every pg_hba.conf the agent (or the shell entrypoint before it) wrote: a
// file starting otherwise is somebody else's and is left alone.
const hbaHeader = "# Written by pgops"

// hbaRules: password (scram-sha-256) over TCP for clients and replication; peer over the
// Unix socket for the OS user postgres, as postgres or as the superuser, so an exec into
// the pod needs no password and the agent logs in without one.
const hbaRules = `# Written by pgops at every start; edits are lost.
# TYPE  DATABASE     USER  ADDRESS    METHOD
local   all          all              peer map=pgops
host    all          all   0.0.0.0/0  scram-sha-256
host    all          all   ::/0       scram-sha-256
host    replication  all   0.0.0.0/0  scram-sha-256
host    replication  all   ::/0       scram-sha-256
`

// pgopsConf is appended to a new primary's postgresql.conf. listen_addresses, port and
// unix_socket_directories are set on the command line at every start, because the pod IP
// changes.
const pgopsConf = `
# Written by pgops. listen_addresses, port and unix_socket_directories are set on the
# command line at every start, because the pod IP changes.
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
`

// confQuote is a postgresql.conf string literal (” for ', \\ for \).
func confQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// conninfoQuote is a libpq conninfo value (\' for ', \\ for \).
func conninfoQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// identQuote is a pg_hba.conf / pg_ident.conf token ("" for ").
func identQuote(v string) string {
	return `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
}

// writeFileAtomic writes data to a side file in path's directory, readable only by the
// owner (libpq ignores a passfile others can read; the server wants its files private),
// and renames it into place, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writePassfile gives the standby the credential it connects to the primary with. A side
// file that the ops-manager's rewrite left behind when it stopped half-way is removed.
func writePassfile(c *Config) error {
	if err := os.Remove(c.Passfile() + ".pgops"); err != nil && !os.IsNotExist(err) {
		return err
	}
	return writeFileAtomic(c.Passfile(), []byte(credential.PassfileLine(c.User, c.Password)+"\n"))
}

// writeAuthFiles writes pg_hba.conf and pg_ident.conf at every start, so a data directory
// made by an earlier pgops (or cloned from the primary) gets the current rules. A
// pg_hba.conf that pgops did not write (its first line says so) is left as it is, with
// pg_ident.conf: its rules are somebody's. It tells whether it wrote them.
func writeAuthFiles(c *Config) (bool, error) {
	hba := filepath.Join(c.DataDir, "pg_hba.conf")
	if first, err := firstLine(hba); err != nil && !os.IsNotExist(err) {
		return false, err
	} else if err == nil && !strings.HasPrefix(first, hbaHeader) {
		return false, nil
	}
	if err := writeFileAtomic(hba, []byte(hbaRules)); err != nil {
		return false, err
	}
	ident := "# Written by pgops at every start; edits are lost.\n" +
		"# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" +
		"pgops      postgres         postgres\n" +
		"pgops      postgres         " + identQuote(c.User) + "\n"
	return true, writeFileAtomic(filepath.Join(c.DataDir, "pg_ident.conf"), []byte(ident))
}

func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// primaryConnInfo is the standby's primary_conninfo. The password is in the passfile, never
// here: PostgreSQL logs a changed primary_conninfo at reload.
//
// tcp_user_timeout: the WAL receiver's connect has no timeout of its own (connect_timeout
// is not applied to it). A standby that reconnects while the primary's pod is replaced
// sends its SYN through the Service's ClusterIP to an address that is gone (kube-proxy's
// rules, or the connection tracking entry of the first SYN, still name the old pod), and
// the kernel retransmits it for about two minutes. With a 5 s TCP user timeout the attempt
// fails at 5 s and the next one, from a new port, reaches the new pod. It also ends an
// established connection whose primary vanished without a word.
func primaryConnInfo(c *Config) string {
	return fmt.Sprintf("host=%s port=%s user=%s passfile=%s application_name=%s tcp_user_timeout=5000",
		conninfoQuote(c.PrimaryHost), conninfoQuote(fmt.Sprint(c.PrimaryPort)), conninfoQuote(c.User),
		conninfoQuote(c.Passfile()), conninfoQuote(c.PodName))
}

// configureStandby points the standby at the primary with the current credential and marks
// it as a standby, at every start. Other settings in postgresql.auto.conf (ALTER SYSTEM's)
// are kept.
func configureStandby(c *Config) error {
	auto := filepath.Join(c.DataDir, "postgresql.auto.conf")
	var out bytes.Buffer
	old, err := os.ReadFile(auto)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" || isSetting(line, "primary_conninfo") || isSetting(line, "hot_standby") {
			continue
		}
		out.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	fmt.Fprintf(&out, "primary_conninfo = %s\n", confQuote(primaryConnInfo(c)))
	fmt.Fprintf(&out, "hot_standby = %s\n", c.HotStandby())
	if err := writeFileAtomic(auto, out.Bytes()); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.DataDir, "standby.signal"), nil)
}

// isSetting tells whether a configuration line sets name.
func isSetting(line, name string) bool {
	rest, ok := strings.CutPrefix(strings.TrimLeft(line, " \t"), name)
	if !ok {
		return false
	}
	return strings.HasPrefix(strings.TrimLeft(rest, " \t"), "=")
}
