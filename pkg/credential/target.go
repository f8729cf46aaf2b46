package credential

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

const (
	// DefaultConnectTimeout applies when Target.ConnectTimeout is zero.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultStatementTimeout applies when Target.StatementTimeout is zero.
	DefaultStatementTimeout = 30 * time.Second
	// DefaultDatabase applies when Target.Database is empty.
	DefaultDatabase = "postgres"
	// DefaultSSLMode applies when Target.SSLMode is empty.
	DefaultSSLMode = "prefer"

	defaultPort            = 5432
	defaultApplicationName = "pgops-credential"
)

// Target says how to reach a PostgreSQL server and as whom. Operators fill
// it from flags and from the database's Secret. The zero values of the
// optional fields select the defaults above.
type Target struct {
	// Host is a DNS name, an IP address, or an absolute path to a Unix
	// socket directory.
	Host string
	// Port defaults to 5432.
	Port int
	// User and Password authenticate the connection. The operator connects
	// as a superuser: SetPassword and PasswordMatches need it.
	User     string
	Password string
	// Database defaults to "postgres".
	Database string
	// SSLMode is a libpq sslmode (disable, allow, prefer, require,
	// verify-ca, verify-full); defaults to "prefer".
	SSLMode string
	// ConnectTimeout bounds dialing plus the TLS and authentication
	// handshake (rounded up to whole seconds, as the driver counts them; a
	// context deadline applies with full precision). Defaults to 10s.
	ConnectTimeout time.Duration
	// StatementTimeout is sent as the statement_timeout setting of the
	// session. Defaults to 30s; negative disables it.
	StatementTimeout time.Duration
	// ApplicationName shows up in pg_stat_activity; defaults to
	// "pgops-credential".
	ApplicationName string
}

// String describes the target without its password.
func (t Target) String() string {
	return fmt.Sprintf("%s@%s:%d/%s", t.User, t.Host, t.port(), t.database())
}

// GoString keeps %#v from printing the password.
func (t Target) GoString() string { return "credential.Target{" + t.String() + "}" }

func (t Target) port() int {
	if t.Port == 0 {
		return defaultPort
	}
	return t.Port
}

func (t Target) database() string {
	if t.Database == "" {
		return DefaultDatabase
	}
	return t.Database
}

func (t Target) validate() error {
	switch {
	case t.Host == "":
		return fmt.Errorf("credential: %w: empty host", ErrInvalidTarget)
	case t.Port < 0 || t.Port > math.MaxUint16:
		return fmt.Errorf("credential: %w: port %d out of range", ErrInvalidTarget, t.Port)
	case t.User == "":
		return fmt.Errorf("credential: %w: empty user", ErrInvalidTarget)
	case strings.IndexByte(t.User, 0) >= 0 || strings.IndexByte(t.Password, 0) >= 0 ||
		strings.IndexByte(t.Host, 0) >= 0 || strings.IndexByte(t.Database, 0) >= 0:
		return fmt.Errorf("credential: %w: NUL byte in a connection parameter", ErrInvalidTarget)
	}
	switch t.SSLMode {
	case "", "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		return fmt.Errorf("credential: %w: unknown sslmode %q", ErrInvalidTarget, t.SSLMode)
	}
	return nil
}

// quoteDSNValue quotes a value for a libpq key=value connection string:
// single quotes, with backslash and single quote escaped by a backslash.
func quoteDSNValue(v string) string {
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('\'')
	for _, r := range v {
		if r == '\'' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

// address is host:port as lib/pq dials it.
func (t Target) address() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(t.port()))
}

// sslMode is the sslmode to connect with: t's, or disable for prefer while the server has
// refused SSL recently (refusedSSL).
func (t Target) sslMode() string {
	ssl := t.SSLMode
	if ssl == "" {
		ssl = DefaultSSLMode
	}
	if ssl == "prefer" && refusedSSL.recent(t.address(), time.Now()) {
		return "disable"
	}
	return ssl
}

// dsn builds the key=value connection string for everything but the
// credentials.
func (t Target) dsn() string {
	ssl := t.sslMode()
	ct := t.ConnectTimeout
	if ct <= 0 {
		ct = DefaultConnectTimeout
	}
	secs := int64((ct + time.Second - 1) / time.Second)
	app := t.ApplicationName
	if app == "" {
		app = defaultApplicationName
	}
	kv := [][2]string{
		{"host", t.Host},
		{"port", strconv.Itoa(t.port())},
		{"dbname", t.database()},
		{"sslmode", ssl},
		{"connect_timeout", strconv.FormatInt(secs, 10)},
		{"application_name", app},
	}
	st := t.StatementTimeout
	if st == 0 {
		st = DefaultStatementTimeout
	}
	if st > 0 {
		ms := int64((st + time.Millisecond - 1) / time.Millisecond)
		// Unknown keys are sent by lib/pq as run-time parameters.
		kv = append(kv, [2]string{"statement_timeout", strconv.FormatInt(ms, 10)})
	}
	var b strings.Builder
	for i, p := range kv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p[0])
		b.WriteByte('=')
		b.WriteString(quoteDSNValue(p[1]))
	}
	return b.String()
}

// connector builds a lib/pq connector for t. The user name and password are
// set on the parsed pq.Config directly rather than through the DSN: the DSN
// parser works on runes and would replace bytes that are not valid UTF-8, so
// setting the fields keeps every byte exact. Environment variables lib/pq
// honours (PGSSLROOTCERT, PGOPTIONS, …) still apply to keys not set here; a
// .pgpass file is consulted only if Password is empty.
func (t Target) connector(ctx context.Context) (closingConnector, error) {
	if err := t.validate(); err != nil {
		return closingConnector{}, err
	}
	if os.Getenv("PQGO_DEBUG") == "1" {
		// lib/pq then prints connection parameters and every statement,
		// including passwords and verifiers, to stderr.
		return closingConnector{}, fmt.Errorf("credential: refusing to connect with PQGO_DEBUG=1: lib/pq would print secrets to stderr")
	}
	cfg, err := pq.NewConfig(t.dsn())
	if err != nil {
		return closingConnector{}, fmt.Errorf("credential: %w: %v", ErrInvalidTarget, err)
	}
	cfg.User = t.User
	cfg.Password = t.Password
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return closingConnector{}, fmt.Errorf("credential: %w: %v", ErrInvalidTarget, err)
	}
	dialer := &ctxDialer{op: ctx, watchSSL: cfg.SSLMode == pq.SSLModePrefer}
	c.Dialer(dialer)
	return closingConnector{Connector: c, dialer: dialer}, nil
}

// closingConnector is a lib/pq connector whose pool's Close also closes every connection
// its dialer opened for the operation. lib/pq (v1.12.3) drops a connection without closing
// it whenever the SSL negotiation of sslmode=prefer fails, a server without TLS answering
// "no" included: it dials again without SSL, and the first socket stays open (in CLOSE-WAIT
// once the server gives up on it) until the garbage collector finds it. With pgops's
// servers, which have no TLS, and the default sslmode=prefer, that was one socket per
// operation. One operation per pool makes the pool's end the operation's end.
type closingConnector struct {
	*pq.Connector
	dialer *ctxDialer
}

// Close is called by sql.DB.Close.
func (c closingConnector) Close() error {
	c.dialer.closeAll()
	return nil
}

// open returns a single dedicated connection to t. The caller must Close
// both the connection and the pool.
func (t Target) open(ctx context.Context, op string) (*sql.DB, *sql.Conn, error) {
	c, err := t.connector(ctx)
	if err != nil {
		return nil, nil, err
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, wrapErr(ctx, op, err, false, t.Password)
	}
	return db, conn, nil
}

// ctxDialer dials TCP or Unix sockets and ties the resulting connection to
// the operation's context: every deadline the driver sets is clamped to the
// context deadline, and cancelling the context unblocks any pending read or
// write. lib/pq otherwise ignores the context during the startup and
// authentication handshake.
type ctxDialer struct {
	op context.Context
	d  net.Dialer
	// watchSSL records a server's refusal of SSL (sslmode=prefer; see refusedSSL).
	watchSSL bool

	mu     sync.Mutex
	dialed []net.Conn // every connection of the operation, for closeAll
	closed bool
}

// track records c for closeAll, or closes it if the operation's pool is closed already.
func (d *ctxDialer) track(c net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		_ = c.Close()
		return
	}
	d.dialed = append(d.dialed, c)
}

// closeAll closes every connection the dialer opened; lib/pq has closed most of them
// already, and a second Close does nothing.
func (d *ctxDialer) closeAll() {
	d.mu.Lock()
	dialed := d.dialed
	d.dialed, d.closed = nil, true
	d.mu.Unlock()
	for _, c := range dialed {
		_ = c.Close()
	}
}

func (d *ctxDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *ctxDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *ctxDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.op.Err() != nil {
		// The operation is over: this is lib/pq sending a CancelRequest on
		// a fresh connection for a statement we gave up on. Let it through
		// unbound, under the driver's own timeout.
		// lib/pq closes it itself, and does not wait for it: closeAll must not cut
		// it off before it is sent.
		return d.d.DialContext(ctx, network, address)
	}
	// Dial under both the driver's context (connect_timeout) and ours.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.op, cancel)
	defer stop()
	c, err := d.d.DialContext(dctx, network, address)
	if err != nil {
		if d.op.Err() != nil {
			return nil, &ctxError{ctx: d.op.Err(), err: err}
		}
		return nil, err
	}
	cc := &ctxConn{Conn: c, ctx: d.op}
	cc.stop = context.AfterFunc(d.op, cc.expire)
	if err := cc.SetDeadline(time.Time{}); err != nil {
		cc.Close()
		return nil, err
	}
	d.track(cc)
	if d.watchSSL {
		return &sslWatch{Conn: cc, addr: address}, nil
	}
	return cc, nil
}

type ctxConn struct {
	net.Conn
	ctx  context.Context
	stop func() bool
	mu   sync.Mutex
}

var pastDeadline = time.Unix(1, 0)

func (c *ctxConn) clamp(t time.Time) time.Time {
	if c.ctx.Err() != nil {
		return pastDeadline
	}
	if d, ok := c.ctx.Deadline(); ok && (t.IsZero() || d.Before(t)) {
		return d
	}
	return t
}

func (c *ctxConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.Conn.SetDeadline(pastDeadline)
}

func (c *ctxConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetDeadline(c.clamp(t))
}

func (c *ctxConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *ctxConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// closeQuietly closes conn and db, ignoring errors (a failed Close on a
// connection we are discarding carries no information).
func closeQuietly(db *sql.DB, conn *sql.Conn) {
	if conn != nil {
		_ = conn.Close()
	}
	if db != nil {
		_ = db.Close()
	}
}
