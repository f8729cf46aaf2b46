package credential

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// SetPassword sets role's password on the server behind target.
//
// Before touching the server it validates role ([ValidateRoleName]) and
// password ([CheckPassword]) and computes the SCRAM-SHA-256 verifier locally
// ([NewVerifier]), so the plaintext never leaves this process. Then, on one
// dedicated connection as target.User (a superuser):
//
//	SET log_transaction_sample_rate = 0      -- session; sampling is decided at BEGIN
//	BEGIN
//	SET LOCAL log_statement = 'none'
//	SET LOCAL log_min_error_statement = 'panic'
//	SET LOCAL log_min_duration_statement = -1
//	SET LOCAL debug_print_parse / debug_print_rewritten / debug_print_plan = off
//	SET LOCAL log_min_duration_sample = -1   -- PostgreSQL 13+
//	SET LOCAL pg_stat_statements.track_utility = off -- if pg_stat_statements is loaded
//	ALTER ROLE "<role>" PASSWORD '<verifier>'
//	COMMIT
//
// so that neither a statement log, an error's STATEMENT line, a duration log
// nor pg_stat_statements records the verifier. The role name is quoted with
// pq.QuoteIdentifier and the verifier with pq.QuoteLiteral.
//
// Errors are *Error values (see [Classify]); a missing role wraps
// ErrRoleNotFound. They never contain the password or the verifier.
func SetPassword(ctx context.Context, target Target, role, password string) error {
	const op = "set password"
	if err := ValidateRoleName(role); err != nil {
		return err
	}
	if err := CheckPassword(password); err != nil {
		return err
	}
	verifier, err := NewVerifier(password)
	if err != nil {
		return err
	}
	return setVerifier(ctx, target, role, verifier, op, password)
}

// SetVerifier is SetPassword for a verifier computed elsewhere (for example
// with [NewVerifier], or read from another server). The verifier must parse
// with [ParseVerifier]: anything else would be taken by PostgreSQL as a
// plaintext password.
func SetVerifier(ctx context.Context, target Target, role, verifier string) error {
	if err := ValidateRoleName(role); err != nil {
		return err
	}
	if _, err := ParseVerifier(verifier); err != nil {
		return err
	}
	return setVerifier(ctx, target, role, verifier, "set verifier")
}

func setVerifier(ctx context.Context, target Target, role, verifier, op string, secrets ...string) error {
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return err
	}
	defer closeQuietly(db, conn)
	return setVerifierOn(ctx, conn, role, verifier, op, secrets...)
}

// setVerifierOn runs SetPassword's transaction on conn.
func setVerifierOn(ctx context.Context, conn *sql.Conn, role, verifier, op string, secrets ...string) error {
	secrets = append(secrets, verifier)
	// Also scrub the base64 pieces, should a message quote one alone.
	for _, p := range strings.FieldsFunc(strings.TrimPrefix(verifier, scramPrefix),
		func(r rune) bool { return r == '$' || r == ':' }) {
		if len(p) >= 16 {
			secrets = append(secrets, p)
		}
	}
	fail := func(err error) error { return wrapErr(ctx, op, err, true, secrets...) }

	quiet, err := quietSettings(ctx, conn, "SET LOCAL")
	if err != nil {
		return fail(err)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit

	// The settings carry no secret, so they go in one round trip; the ALTER
	// ROLE must be a statement of its own, sent after they took effect (a
	// multi-statement string is logged as a whole before any of it runs).
	// synchronous_commit local: on a synchronous cluster the commit waits for
	// the primary's own disk only, so a rotation never hangs on a standby it is
	// about to restart (or one that is down).
	if _, err := tx.ExecContext(ctx, quiet+"; SET LOCAL synchronous_commit = local"); err != nil {
		return fail(err)
	}
	alter := "ALTER ROLE " + pq.QuoteIdentifier(role) + " PASSWORD " + pq.QuoteLiteral(verifier)
	if _, err := tx.ExecContext(ctx, alter); err != nil {
		return fail(err)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return nil
}

// EnsurePassword makes password role's password unless role's stored verifier already
// matches it: PasswordMatches, then SetPassword if needed, on one connection as
// target.User (one login instead of two). It tells whether it set the password. A
// password already in place is never set (and re-salted) again.
func EnsurePassword(ctx context.Context, target Target, role, password string) (changed bool, err error) {
	const op = "set password"
	if err := ValidateRoleName(role); err != nil {
		return false, err
	}
	if err := validatePasswordBasic(password); err != nil {
		return false, err
	}
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return false, err
	}
	defer closeQuietly(db, conn)
	stored, err := storedSecretOn(ctx, conn, role, op)
	if err != nil {
		return false, err
	}
	if matches, err := storedMatches(stored, password, op); err != nil || matches {
		return false, err
	}
	if err := CheckPassword(password); err != nil {
		return false, err
	}
	verifier, err := NewVerifier(password)
	if err != nil {
		return false, err
	}
	return true, setVerifierOn(ctx, conn, role, verifier, op, password)
}

// VerifyLogin reports whether a fresh connection to target's server and
// database, authenticating as user with exactly password, succeeds. It
// returns (false, nil) when the server rejects the credentials
// (ClassAuth), and an error for anything else (unreachable, TLS, missing
// database, …). target.User and target.Password are ignored.
//
// lib/pq sends the password bytes as given, without SASLprep (unlike
// libpq); see [CheckPassword] for what that means for non-normalised
// passwords.
func VerifyLogin(ctx context.Context, target Target, user, password string) (bool, error) {
	const op = "verify login"
	if user == "" {
		return false, fmt.Errorf("credential: %w: empty user", ErrInvalidTarget)
	}
	if err := validatePasswordBasic(password); err != nil {
		return false, err
	}
	target.User, target.Password = user, password
	db, conn, err := target.open(ctx, op)
	if err != nil {
		if Classify(err) == ClassAuth {
			return false, nil
		}
		return false, err
	}
	defer closeQuietly(db, conn)
	if err := conn.PingContext(ctx); err != nil {
		return false, wrapErr(ctx, op, err, false, password)
	}
	return true, nil
}

// PasswordMatches reports whether password matches role's stored
// SCRAM-SHA-256 verifier, without changing it: the verifier is read from
// pg_authid (target.User must be a superuser), parsed, and checked with
// [Verifier.Matches]. The operator uses it to make its password step
// idempotent — a password already in place is not set (and re-salted) again.
//
// A role with no password, or whose stored secret is not a SCRAM-SHA-256
// verifier (an md5 hash, say), yields (false, nil), so that the caller sets
// a proper SCRAM verifier. A missing role yields an error wrapping
// ErrRoleNotFound.
func PasswordMatches(ctx context.Context, target Target, role, password string) (bool, error) {
	const op = "check password"
	if err := ValidateRoleName(role); err != nil {
		return false, err
	}
	if err := validatePasswordBasic(password); err != nil {
		return false, err
	}
	stored, err := StoredSecret(ctx, target, role)
	if err != nil {
		return false, err
	}
	return storedMatches(stored, password, op)
}

// storedMatches tells whether the stored secret stored is a SCRAM-SHA-256 verifier of
// password; another kind of secret (md5, none) does not match.
func storedMatches(stored, password, op string) (bool, error) {
	if !strings.HasPrefix(stored, scramPrefix) {
		return false, nil
	}
	v, err := ParseVerifier(stored)
	if err != nil {
		return false, &Error{Op: op, Class: ClassOther, msg: "stored secret of role is not a valid SCRAM-SHA-256 verifier"}
	}
	return v.Matches(password), nil
}

// StoredSecret returns pg_authid.rolpassword for role ("" when the role has
// no password). The result is secret material: do not log it.
func StoredSecret(ctx context.Context, target Target, role string) (string, error) {
	const op = "read stored secret"
	if err := ValidateRoleName(role); err != nil {
		return "", err
	}
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return "", err
	}
	defer closeQuietly(db, conn)
	return storedSecretOn(ctx, conn, role, op)
}

func storedSecretOn(ctx context.Context, conn *sql.Conn, role, op string) (string, error) {
	var secret sql.NullString
	err := conn.QueryRowContext(ctx, `SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1`, role).Scan(&secret)
	if errors.Is(err, sql.ErrNoRows) {
		return "", &Error{Op: op, Class: ClassOther, Code: "42704", msg: fmt.Sprintf("role %q does not exist", role)}
	}
	if err != nil {
		return "", wrapErr(ctx, op, err, true)
	}
	return secret.String, nil
}

// quietSettings returns the statements (joined with "; ", each starting with set: "SET" for
// the session, "SET LOCAL" for a transaction) that keep the next statement out of every
// log PostgreSQL writes and out of pg_stat_statements. The session-wide
// log_transaction_sample_rate, decided at BEGIN, is set on conn at once.
func quietSettings(ctx context.Context, conn *sql.Conn, set string) (string, error) {
	var version int
	var hasPGSS, hasAutoExplain bool
	if err := conn.QueryRowContext(ctx,
		`SELECT current_setting('server_version_num')::int,
		        current_setting('pg_stat_statements.track_utility', true) IS NOT NULL,
		        current_setting('auto_explain.log_min_duration', true) IS NOT NULL`,
	).Scan(&version, &hasPGSS, &hasAutoExplain); err != nil {
		return "", err
	}
	if version >= 120000 {
		if _, err := conn.ExecContext(ctx, `SET log_transaction_sample_rate = 0`); err != nil {
			return "", err
		}
	}
	settings := []string{
		`log_statement = 'none'`,
		`log_min_error_statement = 'panic'`,
		`log_min_duration_statement = -1`,
		// Parse-tree dumps: PostgreSQL 16+ can print utility statements, literal included.
		`debug_print_parse = off`,
		`debug_print_rewritten = off`,
		`debug_print_plan = off`,
	}
	if version >= 130000 {
		settings = append(settings, `log_min_duration_sample = -1`)
	}
	if hasPGSS {
		settings = append(settings, `pg_stat_statements.track_utility = off`)
	}
	if hasAutoExplain {
		// auto_explain logs the plans of statements that run the executor, such as COPY (query).
		settings = append(settings, `auto_explain.log_min_duration = -1`)
	}
	for i := range settings {
		settings[i] = set + " " + settings[i]
	}
	return strings.Join(settings, "; "), nil
}
