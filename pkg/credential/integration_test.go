package credential_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/pgtest"
)

// superTarget is the superuser connection to s, as the operator builds it.
func superTarget(s *pgtest.Server) credential.Target {
	return credential.Target{
		Host: s.Host, Port: s.Port, User: s.SuperUser, Password: s.SuperPassword,
		SSLMode: "disable", ConnectTimeout: 10 * time.Second,
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createRole(t testing.TB, s *pgtest.Server, role string) {
	t.Helper()
	s.Exec(t, "CREATE ROLE "+pq.QuoteIdentifier(role)+" LOGIN")
}

func storedSecret(t testing.TB, s *pgtest.Server, role string) string {
	t.Helper()
	return s.QueryString(t, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
}

func TestSetPasswordEndToEnd(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	createRole(t, s, "app")

	oldPw, err := credential.GeneratePassword(credential.DefaultPasswordLength)
	require.NoError(t, err)
	newPw, err := credential.GeneratePassword(credential.DefaultPasswordLength)
	require.NoError(t, err)

	require.NoError(t, credential.SetPassword(ctx, tg, "app", oldPw))
	ok, err := credential.VerifyLogin(ctx, tg, "app", oldPw)
	require.NoError(t, err)
	require.True(t, ok, "old password should work before rotation")

	require.NoError(t, credential.SetPassword(ctx, tg, "app", newPw))

	ok, err = credential.VerifyLogin(ctx, tg, "app", newPw)
	require.NoError(t, err)
	assert.True(t, ok, "new password must log in")
	ok, err = credential.VerifyLogin(ctx, tg, "app", oldPw)
	require.NoError(t, err)
	assert.False(t, ok, "old password must be rejected")

	stored := storedSecret(t, s, "app")
	v, err := credential.ParseVerifier(stored)
	require.NoError(t, err, "stored verifier must be well-formed")
	assert.Equal(t, 4096, v.Iterations)
	assert.Len(t, v.Salt, 16)
	assert.Equal(t, stored, v.Encode())
	assert.True(t, v.Matches(newPw))

	m, err := credential.PasswordMatches(ctx, tg, "app", newPw)
	require.NoError(t, err)
	assert.True(t, m)
	m, err = credential.PasswordMatches(ctx, tg, "app", oldPw)
	require.NoError(t, err)
	assert.False(t, m)
	assert.Equal(t, stored, storedSecret(t, s, "app"), "PasswordMatches must not change the verifier")

	// Missing role.
	err = credential.SetPassword(ctx, tg, "no_such_role", newPw)
	assert.ErrorIs(t, err, credential.ErrRoleNotFound)
	assert.Equal(t, credential.ClassOther, credential.Classify(err))
	_, err = credential.PasswordMatches(ctx, tg, "no_such_role", newPw)
	assert.ErrorIs(t, err, credential.ErrRoleNotFound)

	// A role without a password, and one still on md5: no match, no error.
	s.Exec(t, "CREATE ROLE nopw LOGIN")
	m, err = credential.PasswordMatches(ctx, tg, "nopw", newPw)
	require.NoError(t, err)
	assert.False(t, m)
	s.Exec(t, "SET password_encryption = 'md5'; CREATE ROLE md5role LOGIN PASSWORD 'md5pass-1234'")
	m, err = credential.PasswordMatches(ctx, tg, "md5role", "md5pass-1234")
	require.NoError(t, err)
	assert.False(t, m, "an md5 secret is not a SCRAM match; the operator must re-set it")
}

// EnsurePassword sets a password that is not in place, and leaves one that is alone: not
// set again, so not re-salted (the rotation runs it again after a crash past its ALTER ROLE).
func TestEnsurePasswordSetsOnlyWhatIsNotInPlace(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	createRole(t, s, "app")
	require.NoError(t, credential.SetPassword(ctx, tg, "app", "Old-Password-1"))

	changed, err := credential.EnsurePassword(ctx, tg, "app", "New-Password-1")
	require.NoError(t, err)
	assert.True(t, changed)
	ok, err := credential.VerifyLogin(ctx, tg, "app", "New-Password-1")
	require.NoError(t, err)
	assert.True(t, ok, "the new password logs in")
	stored := storedSecret(t, s, "app")

	changed, err = credential.EnsurePassword(ctx, tg, "app", "New-Password-1")
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, stored, storedSecret(t, s, "app"), "a password in place is not set (and re-salted) again")

	s.Exec(t, "SET password_encryption = 'md5'; CREATE ROLE md5role LOGIN PASSWORD 'md5pass-1234'")
	changed, err = credential.EnsurePassword(ctx, tg, "md5role", "md5pass-1234")
	require.NoError(t, err)
	assert.True(t, changed, "an md5 secret is replaced by a SCRAM verifier")
	assert.True(t, strings.HasPrefix(storedSecret(t, s, "md5role"), "SCRAM-SHA-256$"))

	_, err = credential.EnsurePassword(ctx, tg, "no_such_role", "New-Password-1")
	assert.ErrorIs(t, err, credential.ErrRoleNotFound)
	wrong := tg
	wrong.Password = "not-the-password-1"
	_, err = credential.EnsurePassword(ctx, wrong, "app", "New-Password-2")
	assert.Equal(t, credential.ClassAuth, credential.Classify(err), "a rejected login is told apart")
}

// TestNoSecretsInServerLog runs SetPassword against a server that logs every
// statement and checks that neither the plaintext nor any part of the
// verifier reaches the log, for a successful and a failing call.
func TestNoSecretsInServerLog(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t,
		pgtest.WithSetting("log_statement", "all"),
		pgtest.WithSetting("log_min_duration_statement", "0"),
		pgtest.WithSetting("log_min_error_statement", "error"), // the default, stated
		pgtest.WithSetting("log_connections", "on"),
		// Other ways a statement's text can reach the log.
		pgtest.WithSetting("log_transaction_sample_rate", "1"),
		pgtest.WithSetting("log_min_duration_sample", "0"),
		pgtest.WithSetting("log_statement_sample_rate", "1"),
		pgtest.WithSetting("debug_print_parse", "on"),
		pgtest.WithSetting("debug_print_rewritten", "on"),
		pgtest.WithSetting("debug_print_plan", "on"),
	)
	ctx := ctxT(t)
	tg := superTarget(s)
	createRole(t, s, "logged_role")

	okPw := "Sup3r-Secret-Plaintext-OK"
	require.NoError(t, credential.SetPassword(ctx, tg, "logged_role", okPw))
	verifier := storedSecret(t, s, "logged_role")
	v, err := credential.ParseVerifier(verifier)
	require.NoError(t, err)

	ensuredPw := "Sup3r-Secret-Plaintext-ENSURED"
	createRole(t, s, "ensured_role")
	changed, err := credential.EnsurePassword(ctx, tg, "ensured_role", ensuredPw)
	require.NoError(t, err)
	require.True(t, changed)
	ensured, err := credential.ParseVerifier(storedSecret(t, s, "ensured_role"))
	require.NoError(t, err)

	failPw := "Sup3r-Secret-Plaintext-FAIL"
	err = credential.SetPassword(ctx, tg, "role_that_does_not_exist", failPw)
	require.ErrorIs(t, err, credential.ErrRoleNotFound)
	assert.NotContains(t, err.Error(), failPw)
	assert.NotContains(t, err.Error(), "SCRAM-SHA-256$")

	// Another failure mode: a permission error from a non-superuser.
	createRole(t, s, "weak")
	require.NoError(t, credential.SetPassword(ctx, tg, "weak", "weak-password-1"))
	weak := tg
	weak.User, weak.Password = "weak", "weak-password-1"
	err = credential.SetPassword(ctx, weak, "logged_role", failPw)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), failPw)
	assert.NotContains(t, err.Error(), "SCRAM-SHA-256$")
	// logged_role still has okPw:
	ok, err := credential.VerifyLogin(ctx, tg, "logged_role", okPw)
	require.NoError(t, err)
	assert.True(t, ok)

	s.Exec(t, "SELECT 'end-of-test-marker'")
	log := s.LogContents()
	require.Contains(t, log, "end-of-test-marker", "log_statement=all is not in effect")
	require.Contains(t, log, "SET LOCAL log_statement", "SetPassword's statements are not being logged at all?")
	require.Contains(t, log, "role_that_does_not_exist", "the failing call's error should be logged")

	for _, secret := range []string{
		okPw, failPw, ensuredPw, "weak-password-1", "SCRAM-SHA-256$", "PASSWORD",
		b64(v.Salt), b64(v.StoredKey[:]), b64(v.ServerKey[:]),
		b64(ensured.Salt), b64(ensured.StoredKey[:]), b64(ensured.ServerKey[:]),
	} {
		if strings.Contains(log, secret) {
			t.Errorf("server log contains %q", secret)
		}
	}
	for _, l := range s.LogLines("ALTER ROLE") {
		t.Errorf("ALTER ROLE statement in server log: %q", l)
	}
}

type tricky struct {
	name     string
	role     string
	password string
}

// TestTrickyNamesAndPasswords: role names and passwords that break naive
// code either work end to end (SetPassword, then a lib/pq login with the
// very same plaintext) or fail with a clear error before any server is
// contacted.
func TestTrickyNamesAndPasswords(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)

	works := []tricky{
		{"double quote in name", `we"ird`, "pw-quote-1234"},
		{"single quote in password", "sq", `pa'ss'word`},
		{"backslashes", `back\slash`, `back\\slash\`},
		{"spaces", "with space", "pass with  spaces "},
		{"dollar quoting", "dollar$name", "$$pw$$ $1 $tag$"},
		{"uppercase name", "UpperCase", "UPPER lower"},
		{"sql injection", "x'; DROP ROLE postgres; --", `'); DROP ROLE postgres; --`},
		{"unicode name and NFC password", "\u00fcn\u00efc\u00f8d\u00e9_\u65e5\u672c", "p\u00e4ssw\u00f6rd-\u65e5\u672c\u8a9e"},
		{"emoji password (unassigned in Unicode 3.2: raw bytes)", "emoji", "pw\U0001F600\U0001F511"},
		{"private-use char (prohibited: raw bytes)", "private", "pw\ue000x"},
		{"bidi violation (prohibited: raw bytes)", "bidi", "\u05d0abc"},
		{"RTL-only password", "rtl", "\u05d0\u05d1\u05d2"},
		{"ASCII control char (PostgreSQL ASCII fast path)", "ctrl", "bell\x07tab\t"},
		{"invalid UTF-8 password (raw bytes)", "latin1", "caf\xe9-\xff\xfe"},
		{"63-byte name", strings.Repeat("n", 63), "long-name-pw"},
		{"63-byte multibyte name", strings.Repeat("\u00e9", 31) + "x", "mb-name-pw"},
		{"long password", "longpw", strings.Repeat("Ab1-", 256)},
		{"percent and equals", "pct", "a%b=c&d?e#f"},
	}
	for _, c := range works {
		t.Run("works/"+c.name, func(t *testing.T) {
			createRole(t, s, c.role)
			require.NoError(t, credential.SetPassword(ctx, tg, c.role, c.password))
			v, err := credential.ParseVerifier(storedSecret(t, s, c.role))
			require.NoError(t, err)
			assert.True(t, v.Matches(c.password))
			ok, err := credential.VerifyLogin(ctx, tg, c.role, c.password)
			require.NoError(t, err)
			assert.True(t, ok, "login with the same plaintext failed")
			ok, err = credential.VerifyLogin(ctx, tg, c.role, c.password+"x")
			require.NoError(t, err)
			assert.False(t, ok)
			m, err := credential.PasswordMatches(ctx, tg, c.role, c.password)
			require.NoError(t, err)
			assert.True(t, m)
		})
	}

	// Refused before touching any server: the target points at a closed
	// port, so any attempt to connect would yield ClassUnreachable instead.
	closed := tg
	closed.Port = closedPort(t)
	refused := []struct {
		tricky
		want error
	}{
		{tricky{"64-byte name", strings.Repeat("n", 64), "pw-1234"}, credential.ErrInvalidRole},
		{tricky{"64-byte multibyte name", strings.Repeat("\u00e9", 32), "pw-1234"}, credential.ErrInvalidRole},
		{tricky{"empty name", "", "pw-1234"}, credential.ErrInvalidRole},
		{tricky{"NUL in name", "a\x00b", "pw-1234"}, credential.ErrInvalidRole},
		{tricky{"invalid UTF-8 name", "caf\xe9", "pw-1234"}, credential.ErrInvalidRole},
		{tricky{"empty password", "app", ""}, credential.ErrInvalidPassword},
		{tricky{"NUL in password", "app", "pw\x00x"}, credential.ErrInvalidPassword},
		{tricky{"no-break space (SASLprep maps to space)", "app", "pass\u00a0word"}, credential.ErrPasswordNotNormalized},
		{tricky{"soft hyphen (SASLprep maps to nothing)", "app", "pass\u00adword"}, credential.ErrPasswordNotNormalized},
		{tricky{"zero-width joiner", "app", "pass\u200dword"}, credential.ErrPasswordNotNormalized},
		{tricky{"ligature (NFKC)", "app", "\ufb01nance"}, credential.ErrPasswordNotNormalized},
		{tricky{"decomposed accent (NFKC)", "app", "cafe\u0301"}, credential.ErrPasswordNotNormalized},
	}
	for _, c := range refused {
		t.Run("refused/"+c.name, func(t *testing.T) {
			err := credential.SetPassword(ctx, closed, c.role, c.password)
			require.ErrorIs(t, err, c.want)
			assert.Equal(t, credential.ClassOther, credential.Classify(err))
			if len(c.password) >= 4 {
				assert.NotContains(t, err.Error(), c.password)
			}
		})
	}
}

// TestLibpqDoesNotSASLprep documents why SetPassword refuses passwords that
// SASLprep changes: when the server computes the verifier itself (ALTER
// ROLE … PASSWORD 'plain'), it hashes the SASLprep form; lib/pq then fails
// with the plaintext and succeeds only with the prepared form, while libpq
// clients would succeed with either.
func TestLibpqDoesNotSASLprep(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	raw := "pass\u00a0word\u00ad!"
	prepared := credential.PreparePassword(raw)
	require.Equal(t, "pass word!", prepared)

	s.Exec(t, "CREATE ROLE nbsp LOGIN PASSWORD "+pq.QuoteLiteral(raw))
	m, err := credential.PasswordMatches(ctx, tg, "nbsp", raw)
	require.NoError(t, err)
	assert.True(t, m, "PasswordMatches mirrors the server: raw and prepared forms both match")
	m, err = credential.PasswordMatches(ctx, tg, "nbsp", prepared)
	require.NoError(t, err)
	assert.True(t, m)

	ok, err := credential.VerifyLogin(ctx, tg, "nbsp", raw)
	require.NoError(t, err)
	assert.False(t, ok, "lib/pq sends the raw bytes; if this starts passing, lib/pq learned SASLprep")
	ok, err = credential.VerifyLogin(ctx, tg, "nbsp", prepared)
	require.NoError(t, err)
	assert.True(t, ok)
}

// TestVerifierAcceptedLikeServerComputed: a verifier computed here is
// accepted exactly like one the server computes, and Verifier.Matches /
// PasswordMatches agree with the server's own SCRAM implementation
// (including its SASLprep) on verifiers it computed.
func TestVerifierAcceptedLikeServerComputed(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	pw := "Same-Password-42"

	s.Exec(t, "CREATE ROLE server_made LOGIN PASSWORD "+pq.QuoteLiteral(pw))
	createRole(t, s, "client_made")
	require.NoError(t, credential.SetPassword(ctx, tg, "client_made", pw))

	for _, role := range []string{"server_made", "client_made"} {
		stored := storedSecret(t, s, role)
		v, err := credential.ParseVerifier(stored)
		require.NoError(t, err, role)
		assert.Equal(t, 4096, v.Iterations, role)
		assert.Len(t, v.Salt, 16, role)
		assert.True(t, v.Matches(pw), role)
		assert.False(t, v.Matches(pw+" "), role)
		m, err := credential.PasswordMatches(ctx, tg, role, pw)
		require.NoError(t, err)
		assert.True(t, m, role)
		ok, err := credential.VerifyLogin(ctx, tg, role, pw)
		require.NoError(t, err)
		assert.True(t, ok, role)
		ok, err = credential.VerifyLogin(ctx, tg, role, pw+"!")
		require.NoError(t, err)
		assert.False(t, ok, role)
	}

	// SetVerifier with a verifier the server made, copied to another role.
	createRole(t, s, "copied")
	require.NoError(t, credential.SetVerifier(ctx, tg, "copied", storedSecret(t, s, "server_made")))
	ok, err := credential.VerifyLogin(ctx, tg, "copied", pw)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.ErrorIs(t, credential.SetVerifier(ctx, tg, "copied", "plaintext"), credential.ErrInvalidVerifier)
}

// TestSASLprepAgreesWithServer lets the server compute verifiers (with its
// own pg_saslprep) for many strings and checks that Verifier.Matches, which
// uses this package's SASLprep, accepts every one of them.
func TestSASLprepAgreesWithServer(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	db := s.DB(t)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "CREATE ROLE prep LOGIN")
	require.NoError(t, err)

	inputs := []string{
		"plain", "a\u00a0b", "I\u00adX", "\u00aa", "\u2168", "\ufb01", "\uff21\uff42", "e\u0301", "\u212b",
		"a\u200bb\u00e9", "a\u200db\u00e9", "\u1680x\u00e9", "\u3000\u00e9", "x\ufe0f\u00e9", "\u2474\u00e9",
		"\u0627\u0031", "\u05d0\u05d1", "\u05d01\u05d1", "\u05d0a", "pw\U0001F600", "a\ue000", "\u00e9\u0085",
		"\u00ad", "\u00ad\u200d", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u0390", "\u1e9b\u0323",
		"\u00bd", "\u2126", "\u017f", "\u3392", "\u32a4\u00e9", "\u0f77", "\u0958", "\uFB2A\u05d0",
		"\xff\xfe", "caf\xe9", "\U0001D400", "\u0221", "\u0340x\u00e9", "\u2ff0\u00e9", "\U000E0041\u00e9",
	}
	// A spread of code points from the BMP and beyond, in short strings.
	for cp := rune(0xA0); cp < 0x3400; cp += 37 {
		inputs = append(inputs, string([]rune{'k', cp, cp + 1}))
	}
	for cp := rune(0xF900); cp < 0x10000; cp += 53 {
		inputs = append(inputs, string([]rune{cp, 'z'}))
	}
	mismatches := 0
	for _, in := range inputs {
		if strings.IndexByte(in, 0) >= 0 || !utf8.ValidString(in) {
			// A UTF8 database refuses such literals; the raw-bytes fallback
			// is exercised end to end in TestTrickyNamesAndPasswords.
			continue
		}
		if _, err := conn.ExecContext(ctx, "ALTER ROLE prep PASSWORD "+pq.QuoteLiteral(in)); err != nil {
			t.Fatalf("ALTER ROLE for %+q: %v", in, err)
		}
		var stored string
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'prep'").Scan(&stored))
		v, err := credential.ParseVerifier(stored)
		require.NoError(t, err)
		if !v.Matches(in) {
			prepped, res := credential.SASLprep(in)
			t.Errorf("server and SASLprep disagree on %+q (our result: %v %+q)", in, res, prepped)
			mismatches++
		}
	}
	t.Logf("checked %d strings, %d mismatches", len(inputs), mismatches)
}

// TestStandbyAcceptsNewPassword: a streaming standby accepts the new
// password once it has replayed the change.
func TestStandbyAcceptsNewPassword(t *testing.T) {
	t.Parallel()
	primary := pgtest.Start(t)
	ctx := ctxT(t)
	createRole(t, primary, "replicated")
	require.NoError(t, credential.SetPassword(ctx, superTarget(primary), "replicated", "Old-Password-1"))
	standby := pgtest.StartStandby(t, primary)
	standby.WaitForReplay(t, primary.CurrentLSN(t), time.Minute)
	assert.Equal(t, "true", standby.QueryString(t, "SELECT pg_is_in_recovery()"))

	n, err := credential.StreamingStandbys(ctx, superTarget(primary))
	require.NoError(t, err)
	assert.Equal(t, 1, n, "StreamingStandbys on the primary")
	names, err := credential.StreamingStandbyNames(ctx, superTarget(primary))
	require.NoError(t, err)
	assert.Len(t, names, 1, "StreamingStandbyNames on the primary: %v", names)
	wrong := superTarget(primary)
	wrong.Password = "not-the-password"
	_, err = credential.StreamingStandbyNames(ctx, wrong)
	assert.Equal(t, credential.ClassAuth, credential.Classify(err), "a rejected login is an auth error: %v", err)

	st := superTarget(standby)
	ok, err := credential.VerifyLogin(ctx, st, "replicated", "Old-Password-1")
	require.NoError(t, err)
	require.True(t, ok)

	require.NoError(t, credential.SetPassword(ctx, superTarget(primary), "replicated", "New-Password-2"))
	standby.WaitForReplay(t, primary.CurrentLSN(t), time.Minute)

	ok, err = credential.VerifyLogin(ctx, st, "replicated", "New-Password-2")
	require.NoError(t, err)
	assert.True(t, ok, "standby must accept the new password after replay")
	ok, err = credential.VerifyLogin(ctx, st, "replicated", "Old-Password-1")
	require.NoError(t, err)
	assert.False(t, ok, "standby must reject the old password after replay")
	m, err := credential.PasswordMatches(ctx, st, "replicated", "New-Password-2")
	require.NoError(t, err)
	assert.True(t, m, "PasswordMatches works on a read-only standby")

	// SetPassword against the standby fails cleanly (read-only).
	err = credential.SetPassword(ctx, st, "replicated", "Third-Password-3")
	require.Error(t, err)
	assert.Equal(t, credential.ClassOther, credential.Classify(err))
}

// closedPort returns a TCP port on 127.0.0.1 that nothing listens on.
func closedPort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// serveTCP listens on a loopback port until the test ends, calls handle for each
// connection it accepts, and returns the port.
func serveTCP(t testing.TB, handle func(net.Conn)) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// silentServer accepts TCP connections and never answers.
func silentServer(t testing.TB) int {
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return serveTCP(t, func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	})
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	tg := superTarget(s)
	createRole(t, s, "classy")
	bg := context.Background()

	t.Run("closed port is unreachable", func(t *testing.T) {
		closed := tg
		closed.Port = closedPort(t)
		ok, err := credential.VerifyLogin(bg, closed, "classy", "whatever-pw")
		assert.False(t, ok)
		assert.ErrorIs(t, err, credential.ErrUnreachable)
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err))
		err = credential.SetPassword(bg, closed, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err))
		_, err = credential.PasswordMatches(bg, closed, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err))
	})

	t.Run("silent server hits the connect timeout", func(t *testing.T) {
		silent := tg
		silent.Port = silentServer(t)
		silent.ConnectTimeout = time.Second
		start := time.Now()
		err := credential.SetPassword(bg, silent, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err), "%v", err)
		assert.Less(t, time.Since(start), 20*time.Second, "connect timeout ignored")
	})

	t.Run("silent server and a context deadline", func(t *testing.T) {
		silent := tg
		silent.Port = silentServer(t)
		silent.ConnectTimeout = time.Minute
		ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := credential.VerifyLogin(ctx, silent, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err), "%v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 20*time.Second, "context deadline ignored")
	})

	t.Run("cancelled context is other", func(t *testing.T) {
		silent := tg
		silent.Port = silentServer(t)
		ctx, cancel := context.WithCancel(bg)
		time.AfterFunc(200*time.Millisecond, cancel)
		_, err := credential.VerifyLogin(ctx, silent, "classy", "whatever-pw")
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
	})

	t.Run("wrong superuser password is auth", func(t *testing.T) {
		bad := tg
		bad.Password = "not-the-password"
		err := credential.SetPassword(bg, bad, "classy", "whatever-pw")
		assert.ErrorIs(t, err, credential.ErrAuthFailed)
		assert.Equal(t, credential.ClassAuth, credential.Classify(err))
		assert.NotContains(t, err.Error(), "not-the-password")
		_, err = credential.PasswordMatches(bg, bad, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassAuth, credential.Classify(err))
	})

	t.Run("wrong password in VerifyLogin is false, nil", func(t *testing.T) {
		ok, err := credential.VerifyLogin(bg, tg, "classy", "wrong-pw")
		assert.NoError(t, err)
		assert.False(t, ok)
		ok, err = credential.VerifyLogin(bg, tg, "nobody_at_all", "wrong-pw")
		assert.NoError(t, err)
		assert.False(t, ok, "unknown users look like a wrong password")
	})

	t.Run("missing database is other", func(t *testing.T) {
		nodb := tg
		nodb.Database = "no_such_db"
		ok, err := credential.VerifyLogin(bg, nodb, s.SuperUser, s.SuperPassword)
		assert.False(t, ok)
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
		var ce *credential.Error
		require.True(t, errors.As(err, &ce))
		assert.Equal(t, "3D000", ce.Code)
	})

	t.Run("TLS required but not offered is other", func(t *testing.T) {
		tls := tg
		tls.SSLMode = "require"
		_, err := credential.VerifyLogin(bg, tls, s.SuperUser, s.SuperPassword)
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
	})

	t.Run("permission denied is other", func(t *testing.T) {
		s.Exec(t, "CREATE ROLE plain LOGIN PASSWORD 'plain-password-1'")
		plain := tg
		plain.User, plain.Password = "plain", "plain-password-1"
		err := credential.SetPassword(bg, plain, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
		_, err = credential.PasswordMatches(bg, plain, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
	})

	t.Run("statement timeout under a lock is other", func(t *testing.T) {
		// Hold a lock on the role's pg_authid row so ALTER ROLE waits.
		db := s.DB(t)
		tx, err := db.Begin()
		require.NoError(t, err)
		defer tx.Rollback()
		_, err = tx.Exec("ALTER ROLE classy CONNECTION LIMIT 5")
		require.NoError(t, err)
		short := tg
		short.StatementTimeout = 300 * time.Millisecond
		err = credential.SetPassword(bg, short, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassOther, credential.Classify(err), "%v", err)
		var ce *credential.Error
		require.True(t, errors.As(err, &ce))
		assert.Equal(t, "57014", ce.Code)
	})

	t.Run("stopped server is unreachable", func(t *testing.T) {
		s.Stop()
		defer s.Start()
		err := credential.SetPassword(bg, tg, "classy", "whatever-pw")
		assert.Equal(t, credential.ClassUnreachable, credential.Classify(err), "%v", err)
	})
}

func TestConcurrentSetPassword(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	const n = 8
	roles := make([]string, n)
	pws := make([]string, n)
	for i := range roles {
		roles[i] = fmt.Sprintf("conc_%d", i)
		createRole(t, s, roles[i])
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for round := 0; round < 3; round++ {
		for i := range roles {
			p, err := credential.GeneratePassword(20)
			require.NoError(t, err)
			pws[i] = p
		}
		for i := range roles {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = credential.SetPassword(ctx, tg, roles[i], pws[i])
			}(i)
		}
		wg.Wait()
		for i := range roles {
			require.NoError(t, errs[i], roles[i])
		}
	}
	for i := range roles {
		ok, err := credential.VerifyLogin(ctx, tg, roles[i], pws[i])
		require.NoError(t, err)
		assert.True(t, ok, roles[i])
		other := pws[(i+1)%n]
		ok, err = credential.VerifyLogin(ctx, tg, roles[i], other)
		require.NoError(t, err)
		assert.False(t, ok, "%s accepts another role's password", roles[i])
	}
}

func BenchmarkSetPassword(b *testing.B) {
	s := pgtest.Start(b)
	tg := superTarget(s)
	createRole(b, s, "bench")
	ctx := context.Background()
	pw, err := credential.GeneratePassword(credential.DefaultPasswordLength)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := credential.SetPassword(ctx, tg, "bench", pw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyLogin(b *testing.B) {
	s := pgtest.Start(b)
	tg := superTarget(s)
	createRole(b, s, "bench")
	ctx := context.Background()
	if err := credential.SetPassword(ctx, tg, "bench", "Bench-Password-1"); err != nil {
		b.Fatal(err)
	}
	// Through a proxy that counts connections: sslmode=prefer, the operators' default,
	// against a server without TLS, as pgops's are.
	port, accepted := countingProxy(b, s.Port)
	tg.Host, tg.Port = "127.0.0.1", port
	for _, mode := range []string{"disable", "prefer"} {
		b.Run("sslmode="+mode, func(b *testing.B) {
			tg.SSLMode = mode
			before := accepted()
			for b.Loop() {
				ok, err := credential.VerifyLogin(ctx, tg, "bench", "Bench-Password-1")
				if err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
			b.ReportMetric(float64(accepted()-before)/float64(b.N), "connections/op")
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestRotateOwnPassword: the operator's own (superuser) password can be
// rotated over the very connection that authenticates with it.
func TestRotateOwnPassword(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	newPw := "Rotated-Superuser-Password-1"
	require.NoError(t, credential.SetPassword(ctx, tg, s.SuperUser, newPw))
	ok, err := credential.VerifyLogin(ctx, tg, s.SuperUser, newPw)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = credential.VerifyLogin(ctx, tg, s.SuperUser, s.SuperPassword)
	require.NoError(t, err)
	assert.False(t, ok)
	rotated := tg
	rotated.Password = newPw
	m, err := credential.PasswordMatches(ctx, rotated, s.SuperUser, newPw)
	require.NoError(t, err)
	assert.True(t, m)
	// Put the original back for the harness.
	require.NoError(t, credential.SetPassword(ctx, rotated, s.SuperUser, s.SuperPassword))
}

// TestUnixSocketTarget: Host may be a socket directory (the harness trusts
// local connections, so no password is needed there).
func TestUnixSocketTarget(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	sock := credential.Target{Host: s.DataDir, Port: s.Port, User: s.SuperUser}
	createRole(t, s, "via_socket")
	require.NoError(t, credential.SetPassword(ctx, sock, "via_socket", "Socket-Password-1"))
	ok, err := credential.VerifyLogin(ctx, superTarget(s), "via_socket", "Socket-Password-1")
	require.NoError(t, err)
	assert.True(t, ok)
}

// TestNoSecretsInPgStatStatements: with pg_stat_statements tracking utility
// statements, the ALTER ROLE (and its verifier) is not recorded.
func TestNoSecretsInPgStatStatements(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t,
		pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"),
		pgtest.WithSetting("pg_stat_statements.track_utility", "on"),
		pgtest.WithSetting("pg_stat_statements.track", "all"),
	)
	ctx := ctxT(t)
	s.Exec(t, "CREATE EXTENSION pg_stat_statements")
	createRole(t, s, "tracked")
	s.Exec(t, "ALTER ROLE tracked CONNECTION LIMIT 7") // proves utility tracking is on
	require.NoError(t, credential.SetPassword(ctx, superTarget(s), "tracked", "Tracked-Password-1"))
	v, err := credential.ParseVerifier(storedSecret(t, s, "tracked"))
	require.NoError(t, err)

	n := s.QueryString(t, "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%CONNECTION LIMIT%'")
	require.Equal(t, "1", n, "pg_stat_statements does not track utility statements; the test proves nothing")
	all := s.QueryString(t, "SELECT string_agg(query, E'\\n') FROM pg_stat_statements")
	for _, secret := range []string{"Tracked-Password-1", "SCRAM-SHA-256$", b64(v.Salt), b64(v.StoredKey[:]), b64(v.ServerKey[:])} {
		assert.NotContains(t, all, secret)
	}
	assert.NotContains(t, all, "PASSWORD")
}

// TestReplicationLagListsEachStandby: a streaming standby is reported by name with its
// state and a replay position, as `kubectl pgops status` prints it.
func TestReplicationLagListsEachStandby(t *testing.T) {
	t.Parallel()
	primary := pgtest.Start(t)
	ctx := ctxT(t)
	standby := pgtest.StartStandby(t, primary)
	standby.WaitForReplay(t, primary.CurrentLSN(t), time.Minute)
	var lags []credential.StandbyLag
	require.Eventually(t, func() bool {
		var err error
		lags, err = credential.ReplicationLag(ctx, superTarget(primary))
		require.NoError(t, err)
		return len(lags) == 1 && lags[0].State == "streaming" && lags[0].ReplayLagBytes >= 0
	}, time.Minute, 50*time.Millisecond, "one streaming standby: %+v", lags)
	assert.Equal(t, "async", lags[0].SyncState)
	assert.NotEmpty(t, lags[0].Name)
	assert.GreaterOrEqual(t, lags[0].ReplayLagSeconds, 0.0)
}

// TestWakeStandbyTriesThePrimaryAtOnce: a standby whose primary went away retries it only
// every wal_retrieve_retry_interval (an hour here); once the primary is back, a wake makes
// it stream at once. A streaming standby, and a primary, are left alone.
func TestWakeStandbyTriesThePrimaryAtOnce(t *testing.T) {
	t.Parallel()
	primary := pgtest.Start(t)
	ctx := ctxT(t)
	standby := pgtest.StartStandby(t, primary, pgtest.WithSetting("wal_retrieve_retry_interval", "1h"))
	standby.WaitForReplay(t, primary.CurrentLSN(t), time.Minute)

	woke, err := credential.WakeStandby(ctx, superTarget(standby))
	require.NoError(t, err)
	assert.False(t, woke, "a standby that streams is left alone")
	woke, err = credential.WakeStandby(ctx, superTarget(primary))
	require.NoError(t, err)
	assert.False(t, woke, "a primary is no standby")

	primary.Stop()
	// No WAL receiver is not yet the state a wake is for: the first failure restarts the
	// receiver at once, and only the next one makes the startup process wait out
	// wal_retrieve_retry_interval. Wait for that wait.
	waitForValue(t, standby, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'startup' AND wait_event = 'RecoveryRetrieveRetryInterval'", "1")
	waitForValue(t, standby, "SELECT count(*) FROM pg_stat_wal_receiver", "0")
	primary.Start()
	woke, err = credential.WakeStandby(ctx, superTarget(standby))
	require.NoError(t, err)
	assert.True(t, woke)
	waitForValue(t, standby, "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')", "streaming")
}

// waitForValue polls query on s until it returns want, for up to a minute.
func waitForValue(t *testing.T, s *pgtest.Server, query, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = s.QueryString(t, query); got == want {
			return
		}
	}
	t.Fatalf("%s: got %q, want %q", query, got, want)
}

// countingProxy forwards TCP connections to the server at port and counts them.
func countingProxy(t testing.TB, port int) (int, func() int) {
	var mu sync.Mutex
	accepted := 0
	proxy := serveTCP(t, func(c net.Conn) {
		mu.Lock()
		accepted++
		mu.Unlock()
		go func() {
			defer c.Close()
			s, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return
			}
			defer s.Close()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			_, _ = io.Copy(c, s)
		}()
	})
	return proxy, func() int { mu.Lock(); defer mu.Unlock(); return accepted }
}

// With sslmode=prefer and a server without TLS, lib/pq dials twice per login (it asks for
// SSL, is refused, and starts over on a new connection); once the refusal is known, a
// login is one connection (and one backend fork of the server).
func TestPreferLogsInOverOneConnectionOnceSSLWasRefused(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	port, accepted := countingProxy(t, s.Port)
	tg := superTarget(s)
	tg.Host, tg.Port, tg.SSLMode = "127.0.0.1", port, "prefer"
	for i := 0; i < 3; i++ {
		ok, err := credential.VerifyLogin(ctxT(t), tg, s.SuperUser, s.SuperPassword)
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 2+1+1, accepted(), "the first login asks for SSL and dials again; the next ones dial once")
}
