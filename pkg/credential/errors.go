package credential

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Class is the coarse category of an error returned while talking to a
// PostgreSQL server. The operator's state machine switches on it, so the
// mapping is deliberately small and exact; see [Classify].
type Class int

const (
	// ClassNone is the class of a nil error.
	ClassNone Class = iota
	// ClassAuth: the server rejected the credentials (SQLSTATE 28P01
	// invalid_password or 28000 invalid_authorization_specification, the
	// latter including "no pg_hba.conf entry").
	ClassAuth
	// ClassUnreachable: no usable server could be talked to in time: dial
	// errors (connection refused, no route, DNS), I/O timeouts, a context
	// deadline, a connection dropped mid-conversation, SQLSTATE class 08
	// (connection exception) and 57P03 (cannot_connect_now: the server is
	// starting up, shutting down or in recovery).
	ClassUnreachable
	// ClassOther: everything else (SQL errors, a missing role, permission
	// denied, TLS configuration errors, invalid input, a cancelled context…).
	ClassOther
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassAuth:
		return "auth"
	case ClassUnreachable:
		return "unreachable"
	case ClassOther:
		return "other"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// Sentinel errors. Errors returned by this package wrap at most one of
// ErrAuthFailed / ErrUnreachable, so errors.Is answers the class question;
// [Classify] also works on errors that did not come from this package.
var (
	// ErrAuthFailed means the server rejected the credentials.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrUnreachable means the server could not be reached in time.
	ErrUnreachable = errors.New("server unreachable")

	// ErrRoleNotFound means the role does not exist (SQLSTATE 42704, or no
	// row in pg_authid). Its class is ClassOther.
	ErrRoleNotFound = errors.New("role does not exist")
	// ErrInvalidRole means a role name was rejected before contacting the
	// server.
	ErrInvalidRole = errors.New("invalid role name")
	// ErrInvalidPassword means a password was rejected before contacting the
	// server.
	ErrInvalidPassword = errors.New("invalid password")
	// ErrPasswordNotNormalized is returned (wrapping ErrInvalidPassword) by
	// SetPassword for a password that SASLprep would change; see
	// [CheckPassword].
	ErrPasswordNotNormalized = errors.New("password is not in SASLprep-normalised form")
	// ErrInvalidVerifier means a string is not a SCRAM-SHA-256 verifier in
	// the form PostgreSQL stores.
	ErrInvalidVerifier = errors.New("invalid SCRAM-SHA-256 verifier")
	// ErrInvalidTarget means the connection parameters are unusable.
	ErrInvalidTarget = errors.New("invalid connection target")
)

// Classify maps err to its Class:
//
//   - nil → ClassNone
//   - errors from this package wrapping ErrAuthFailed / ErrUnreachable → that class
//   - context.Canceled → ClassOther (the caller gave up; nothing is known about the server)
//   - context.DeadlineExceeded, os.ErrDeadlineExceeded, any net.Error that
//     is a timeout, *net.OpError, *net.DNSError, ECONNREFUSED, ECONNRESET,
//     EPIPE, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, io.EOF,
//     io.ErrUnexpectedEOF, driver.ErrBadConn → ClassUnreachable
//   - a server error (anything with a SQLState() string method, such as
//     *pq.Error) with SQLSTATE 28P01 or 28000 → ClassAuth; class 08… or
//     57P03 → ClassUnreachable; any other SQLSTATE → ClassOther
//   - anything else → ClassOther
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	// Our own wrapped errors carry the verdict already.
	if errors.Is(err, ErrAuthFailed) {
		return ClassAuth
	}
	if errors.Is(err, ErrUnreachable) {
		return ClassUnreachable
	}
	return classifyRaw(err)
}

// sqlStater is implemented by *pq.Error (and other drivers' error types).
type sqlStater interface{ SQLState() string }

func classifyRaw(err error) Class {
	if errors.Is(err, context.Canceled) {
		return ClassOther
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ClassUnreachable
	}
	var st sqlStater
	if errors.As(err, &st) {
		return classifyState(st.SQLState())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ClassUnreachable
	}
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) {
		return ClassUnreachable
	}
	for _, e := range []error{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT,
		io.EOF, io.ErrUnexpectedEOF, driver.ErrBadConn,
	} {
		if errors.Is(err, e) {
			return ClassUnreachable
		}
	}
	return ClassOther
}

func classifyState(code string) Class {
	switch {
	case code == "28P01" || code == "28000":
		return ClassAuth
	case strings.HasPrefix(code, "08") || code == "57P03":
		return ClassUnreachable
	}
	return ClassOther
}

// Error is the error type returned by the functions of this package that
// talk to a server. It never contains a password or a verifier: server
// messages are copied as text (the driver's error value, which can carry the
// statement, is not kept for statements that contain secrets) and scrubbed
// of the secrets involved.
type Error struct {
	// Op is the operation that failed, e.g. "set password".
	Op string
	// Class is the classification of the failure.
	Class Class
	// Code is the SQLSTATE reported by the server, if any.
	Code string

	msg   string
	cause error // nil when the cause could carry secrets
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("credential: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	switch e.Class {
	case ClassAuth:
		b.WriteString(ErrAuthFailed.Error())
		b.WriteString(": ")
	case ClassUnreachable:
		b.WriteString(ErrUnreachable.Error())
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	if e.Code != "" && !strings.Contains(e.msg, e.Code) {
		b.WriteString(" (SQLSTATE ")
		b.WriteString(e.Code)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap exposes the class sentinel, ErrRoleNotFound where it applies, and
// the underlying cause when it is safe to expose.
func (e *Error) Unwrap() []error {
	var errs []error
	switch e.Class {
	case ClassAuth:
		errs = append(errs, ErrAuthFailed)
	case ClassUnreachable:
		errs = append(errs, ErrUnreachable)
	}
	if e.Code == "42704" {
		errs = append(errs, ErrRoleNotFound)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// wrapErr turns a driver/network error into an *Error. If ctx is done, the
// context's error decides the class (a statement cancelled because of our
// deadline is "unreachable", not "query_canceled"). When redact is true the
// cause is not kept (only its text, scrubbed of secrets) so that no caller
// can reach the *pq.Error, whose ErrorWithDetail prints the statement.
func wrapErr(ctx context.Context, op string, err error, redact bool, secrets ...string) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Op: op}
	cerr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(d) {
		// The connection's deadline (clamped to the context's) can fire a
		// moment before the context's own timer marks it done.
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		// Keep both: the context verdict and the driver text.
		err = &ctxError{ctx: cerr, err: err}
	}
	e.Class = classifyRaw(err)
	var st sqlStater
	if errors.As(err, &st) {
		e.Code = st.SQLState()
	}
	e.msg = scrub(err.Error(), secrets...)
	if !redact {
		e.cause = err
	} else if ce := contextCause(err); ce != nil {
		e.cause = ce // context errors carry no secrets
	}
	return e
}

// ctxError joins a context error with the driver error it caused.
type ctxError struct {
	ctx error
	err error
}

func (c *ctxError) Error() string   { return c.ctx.Error() + ": " + c.err.Error() }
func (c *ctxError) Unwrap() []error { return []error{c.ctx, c.err} }

func contextCause(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	return nil
}

const redacted = "[REDACTED]"

// scrub removes every occurrence of the given secrets from s. Secrets shorter
// than 4 bytes are skipped to avoid mangling ordinary words; callers never
// pass such secrets (passwords are validated, verifiers are long).
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}
