package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// runner runs a PostgreSQL program (initdb, pg_basebackup) to completion with extra
// environment; tests replace it.
type runner func(ctx context.Context, extraEnv []string, name string, args ...string) error

// preparer makes the data directory ready for the server to start, at every start.
type preparer struct {
	cfg *Config
	run runner
	// waitPrimary returns once the primary accepts connections.
	waitPrimary func(ctx context.Context) error
}

// pwfilePattern names initdb's password files (os.CreateTemp adds a random suffix).
const pwfilePattern = ".pwfile."

// ErrForeignDataDir is returned for a PGDATA that holds files but no PostgreSQL data
// directory: the agent refuses to touch it rather than destroy somebody's data.
var ErrForeignDataDir = errors.New("PGDATA is not empty but holds no PostgreSQL data directory; move it away")

// prepare decides what this start needs and does it. Every step is safe to repeat: a new
// data directory is made in a side directory that is renamed into place at the end, so a
// crash half-way (an interrupted initdb or clone) never leaves a half-made PGDATA, and the
// next start removes the side directory and begins again.
//
//   - primary (ordinal 0): initdb if there is no data directory; no standby.signal.
//   - standby: the passfile; a clone of the primary if there is no data directory; its
//     primary_conninfo, hot_standby and standby.signal.
//   - both: the data directory private to the server's user, pgops's authentication rules.
func (p *preparer) prepare(ctx context.Context) error {
	c := p.cfg
	if err := checkWritableDir(c.RunDir); err != nil {
		return fmt.Errorf("%s: %w (the pod needs its emptyDir there)", c.RunDir, err)
	}
	if err := os.MkdirAll(filepath.Dir(c.DataDir), 0o700); err != nil {
		return err
	}
	// initdb's password file is removed however initdb ends, unless the agent itself was
	// killed meanwhile: it holds a password, so it goes at the next start.
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(c.DataDir), pwfilePattern+"*"))
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	exists, err := hasDataDir(c.DataDir)
	if err != nil {
		return err
	}
	if c.IsPrimary() {
		if !exists {
			if err := p.initPrimary(ctx); err != nil {
				return err
			}
		}
		if err := os.Remove(filepath.Join(c.DataDir, "standby.signal")); err != nil && !os.IsNotExist(err) {
			return err
		}
	} else {
		if err := writePassfile(c); err != nil {
			return fmt.Errorf("writing the passfile: %w", err)
		}
		if !exists {
			if err := p.cloneStandby(ctx); err != nil {
				return err
			}
		}
		if err := configureStandby(c); err != nil {
			return fmt.Errorf("configuring the standby: %w", err)
		}
	}
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return err
	}
	wrote, err := writeAuthFiles(c)
	if err != nil {
		return fmt.Errorf("writing pg_hba.conf and pg_ident.conf: %w", err)
	}
	if !wrote {
		klog.InfoS("pg_hba.conf was not written by pgops: leaving it and pg_ident.conf as they are", "dataDir", c.DataDir)
	}
	return nil
}

// hasDataDir tells whether dir is a PostgreSQL data directory (a non-empty PG_VERSION).
// An empty directory (the kubelet or a user made it) is removed so it can be renamed over;
// anything else without PG_VERSION is ErrForeignDataDir.
func hasDataDir(dir string) (bool, error) {
	if fi, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil && fi.Size() > 0 {
		return true, nil
	}
	fi, err := os.Lstat(dir)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Only an empty real directory goes: a file or a symlink (even a dangling one) at
	// PGDATA is somebody's, as the shell entrypoint's rmdir refused them too.
	if !fi.IsDir() || syscall.Rmdir(dir) != nil {
		return false, fmt.Errorf("%s: %w", dir, ErrForeignDataDir)
	}
	return false, nil
}

func checkWritableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	f, err := os.CreateTemp(dir, ".pgops-agent-")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// initPrimary runs initdb with the superuser's password from a file that only the server's
// user can read and that is removed however initdb ends: never in argv or the environment.
func (p *preparer) initPrimary(ctx context.Context) error {
	c := p.cfg
	klog.InfoS("Initialising a new primary", "dataDir", c.DataDir)
	work := c.DataDir + ".init"
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	pwfile, err := os.CreateTemp(filepath.Dir(c.DataDir), pwfilePattern)
	if err != nil {
		return err
	}
	defer os.Remove(pwfile.Name())
	_, err = pwfile.WriteString(c.Password + "\n")
	if cerr := pwfile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := p.run(ctx, nil, "initdb", "-D", work, "-U", c.User, "--pwfile="+pwfile.Name(),
		"--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C"); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if err := os.Remove(pwfile.Name()); err != nil {
		return err
	}
	// initdb's rules admit only local addresses; writeAuthFiles replaces them.
	if err := os.WriteFile(filepath.Join(work, "pg_hba.conf"), []byte(hbaHeader+": replaced at start\n"), 0o600); err != nil {
		return err
	}
	conf, err := os.OpenFile(filepath.Join(work, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = conf.WriteString(pgopsConf)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(work, c.DataDir); err != nil {
		return err
	}
	klog.InfoS("Primary initialised", "dataDir", c.DataDir)
	return nil
}

// cloneStandby waits for the primary and copies it with pg_basebackup, authenticating with
// the passfile.
func (p *preparer) cloneStandby(ctx context.Context) error {
	c := p.cfg
	klog.InfoS("Waiting for the primary", "host", c.PrimaryHost, "port", c.PrimaryPort)
	if err := p.waitPrimary(ctx); err != nil {
		return err
	}
	klog.InfoS("Cloning the primary", "host", c.PrimaryHost, "port", c.PrimaryPort, "dataDir", c.DataDir)
	work := c.DataDir + ".clone"
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	// The clone's WAL sender keeps PostgreSQL's default timeout (the servers run with 5 s,
	// serverArgs): a clone from a primary whose disks are busy must not be cut off.
	env := []string{"PGOPTIONS=-c wal_sender_timeout=60s", "PGPASSFILE=" + c.Passfile()}
	if err := p.run(ctx, env, "pg_basebackup", "-h", c.PrimaryHost, "-p", fmt.Sprint(c.PrimaryPort), "-U", c.User,
		"-D", work, "-X", "stream", "--checkpoint=fast", "--no-password"); err != nil {
		return fmt.Errorf("pg_basebackup: %w", err)
	}
	if err := os.Chmod(work, 0o700); err != nil {
		return err
	}
	if err := os.Rename(work, c.DataDir); err != nil {
		return err
	}
	klog.InfoS("Standby cloned", "dataDir", c.DataDir)
	return nil
}

// waitUntil calls ready every interval until it returns true or ctx ends, logging progress
// every logEvery.
func waitUntil(ctx context.Context, interval, logEvery time.Duration, ready func(context.Context) bool, progress func()) error {
	last := time.Now()
	for !ready(ctx) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		if time.Since(last) >= logEvery {
			progress()
			last = time.Now()
		}
	}
	return nil
}
