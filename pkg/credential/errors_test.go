package credential

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	pqErr := func(code string) error { return &pq.Error{Code: pq.ErrorCode(code), Message: "m"} }
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassNone},
		{"28P01", pqErr("28P01"), ClassAuth},
		{"28000", pqErr("28000"), ClassAuth},
		{"wrapped 28P01", fmt.Errorf("x: %w", pqErr("28P01")), ClassAuth},
		{"sentinel auth", fmt.Errorf("x: %w", ErrAuthFailed), ClassAuth},
		{"sentinel unreachable", ErrUnreachable, ClassUnreachable},
		{"42704", pqErr("42704"), ClassOther},
		{"42501", pqErr("42501"), ClassOther},
		{"3D000", pqErr("3D000"), ClassOther},
		{"57014 query canceled", pqErr("57014"), ClassOther},
		{"08006", pqErr("08006"), ClassUnreachable},
		{"57P03", pqErr("57P03"), ClassUnreachable},
		{"deadline", context.DeadlineExceeded, ClassUnreachable},
		{"wrapped deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), ClassUnreachable},
		{"canceled", context.Canceled, ClassOther},
		{"os deadline", os.ErrDeadlineExceeded, ClassUnreachable},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ClassUnreachable},
		{"bare ECONNREFUSED", syscall.ECONNREFUSED, ClassUnreachable},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), ClassUnreachable},
		{"dns", &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, ClassUnreachable},
		{"eof", io.EOF, ClassUnreachable},
		{"unexpected eof", io.ErrUnexpectedEOF, ClassUnreachable},
		{"bad conn", driver.ErrBadConn, ClassUnreachable},
		{"tls config", errors.New("pq: SSL is not enabled on the server"), ClassOther},
		{"plain", errors.New("boom"), ClassOther},
		{"invalid role", fmt.Errorf("x: %w", ErrInvalidRole), ClassOther},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, Classify(c.err))
		})
	}
}

func TestClassString(t *testing.T) {
	assert.Equal(t, "auth", ClassAuth.String())
	assert.Equal(t, "unreachable", ClassUnreachable.String())
	assert.Equal(t, "other", ClassOther.String())
	assert.Equal(t, "none", ClassNone.String())
	assert.Equal(t, "Class(9)", Class(9).String())
}

func TestWrapErrRedacts(t *testing.T) {
	secret := "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$key"
	orig := &pq.Error{Code: "42601", Message: "syntax error near '" + secret + "'"}
	err := wrapErr(context.Background(), "set password", orig, true, secret)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
	assert.Contains(t, err.Error(), redacted)
	var pe *pq.Error
	assert.False(t, errors.As(err, &pe), "the *pq.Error (which keeps the query) must not be reachable")
	var ce *Error
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, "42601", ce.Code)
	assert.Equal(t, ClassOther, Classify(err))

	notFound := wrapErr(context.Background(), "set password", &pq.Error{Code: "42704", Message: `role "x" does not exist`}, true)
	assert.ErrorIs(t, notFound, ErrRoleNotFound)

	auth := wrapErr(context.Background(), "connect", &pq.Error{Code: "28P01", Message: "password authentication failed"}, false)
	assert.ErrorIs(t, auth, ErrAuthFailed)
	assert.True(t, errors.As(auth, &pe), "non-redacted errors keep the cause")
}

func TestWrapErrContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	err := wrapErr(ctx, "op", &pq.Error{Code: "57014", Message: "canceling statement due to user request"}, true)
	assert.Equal(t, ClassUnreachable, Classify(err))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrUnreachable)

	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	err = wrapErr(ctx2, "op", errors.New("read tcp: use of closed connection"), true)
	assert.Equal(t, ClassOther, Classify(err))
	assert.ErrorIs(t, err, context.Canceled)
}

func TestTargetDSNQuoting(t *testing.T) {
	nasty := []string{"plain", "with space", `qu'ote`, `back\slash`, `\'`, `'`, `\`, "tab\tand\nnewline", "$dollar", "\u00fcn\u00efc\u00f8d\u00e9", "="}
	for _, v := range nasty {
		tg := Target{Host: "db.example", Port: 6543, User: "u", Password: "p", Database: v, ApplicationName: v, SSLMode: "disable"}
		cfg, err := pq.NewConfig(tg.dsn())
		require.NoError(t, err, "%q", v)
		assert.Equal(t, v, cfg.Database)
		assert.Equal(t, v, cfg.ApplicationName)
		assert.Equal(t, "db.example", cfg.Host)
		assert.Equal(t, uint16(6543), cfg.Port)
		assert.Equal(t, pq.SSLMode("disable"), cfg.SSLMode)
		assert.Equal(t, "30000", cfg.Runtime["statement_timeout"])
		assert.Equal(t, 10*time.Second, cfg.ConnectTimeout)
		assert.NotContains(t, tg.dsn(), "password")
	}
}

func TestTargetStringHidesPassword(t *testing.T) {
	tg := Target{Host: "h", User: "u", Password: "hunter2-secret"}
	for _, s := range []string{tg.String(), fmt.Sprintf("%v", tg), fmt.Sprintf("%+v", tg), fmt.Sprintf("%#v", tg), fmt.Sprint(tg)} {
		assert.NotContains(t, s, "hunter2")
	}
}

func TestTargetValidate(t *testing.T) {
	bad := []Target{
		{},
		{Host: "h"},
		{Host: "h", User: "u", Port: 70000},
		{Host: "h", User: "u", SSLMode: "bogus"},
		{Host: "h", User: "u\x00"},
	}
	for _, tg := range bad {
		_, err := tg.connector(context.Background())
		assert.ErrorIs(t, err, ErrInvalidTarget, "%s", tg)
	}
	_, err := Target{Host: "h", User: "u"}.connector(context.Background())
	assert.NoError(t, err)
	assert.True(t, strings.Contains(Target{Host: "h", User: "u"}.String(), ":5432/postgres"))
}

func TestRefusesPQGODebug(t *testing.T) {
	t.Setenv("PQGO_DEBUG", "1")
	_, err := Target{Host: "h", User: "u"}.connector(context.Background())
	assert.Error(t, err)
}
